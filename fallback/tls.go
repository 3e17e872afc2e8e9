package fallback

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// The data channel's TLS needs no certificates from the operator: each
// Listener makes an ephemeral self-signed certificate when it starts, and the
// destination sends its SHA-256 fingerprint to the source in the Prepare reply
// (over the control plane, as it sends the token); the sender pins it and
// trusts nothing else. The data-channel's security therefore rests only on
// what the control plane carries. TLS 1.3 only; no session tickets (nothing
// is resumed, and a ticket would be a post-handshake record in the way of
// kTLS).

// tlsRecordHandshake is the first byte of a TLS ClientHello record; a
// plaintext preamble starts with 'R'.
const tlsRecordHandshake = 0x16

// ephemeralCert makes the listener's self-signed certificate.
func ephemeralCert() (tls.Certificate, [32]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, [32]byte{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, [32]byte{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "rxfer data channel (ephemeral, pinned by fingerprint)"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour), // pinned, not validated: the dates do not matter
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, [32]byte{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, sha256.Sum256(der), nil
}

// serverTLSConfig is the listener's TLS configuration.
func serverTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates:           []tls.Certificate{cert},
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
	}
}

// errCertMismatch reports a receiver whose certificate is not the pinned one.
var errCertMismatch = errors.New("the data listener's TLS certificate is not the one the destination named in Prepare")

// clientTLSConfig trusts exactly the certificate whose SHA-256 is pin.
func clientTLSConfig(pin [32]byte) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || sha256.Sum256(raw[0]) != pin {
				return errCertMismatch
			}
			return nil
		},
	}
}

// keyLog collects one connection's TLS 1.3 traffic secrets from
// tls.Config.KeyLogWriter, the only place crypto/tls exposes them; they are
// handed to the kernel (kTLS) and never written anywhere else.
type keyLog struct {
	mu    sync.Mutex
	lines bytes.Buffer
}

func (k *keyLog) Write(b []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lines.Write(b)
}

// secrets returns the client and server application traffic secrets (the
// first generation: tickets and KeyUpdate are not used).
func (k *keyLog) secrets() (client, server []byte, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(k.lines.Bytes()))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 {
			continue
		}
		var dst *[]byte
		switch f[0] {
		case "CLIENT_TRAFFIC_SECRET_0":
			dst = &client
		case "SERVER_TRAFFIC_SECRET_0":
			dst = &server
		default:
			continue
		}
		if *dst, err = hex.DecodeString(f[2]); err != nil {
			return nil, nil, fmt.Errorf("key log: %w", err)
		}
	}
	if client == nil || server == nil {
		return nil, nil, errors.New("key log: no application traffic secrets (not TLS 1.3?)")
	}
	return client, server, nil
}

// wipe clears the collected secrets.
func (k *keyLog) wipe() {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.lines.Bytes()
	clear(b[:cap(b)])
	k.lines.Reset()
}
