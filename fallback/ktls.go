package fallback

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// kTLS: after crypto/tls has done the handshake, and the preamble and its
// reply went through it (one record each way), the connection's TLS 1.3
// application keys and record sequence numbers are handed to the kernel
// (setsockopt TCP_ULP "tls", then SOL_TLS TLS_TX and TLS_RX), and the stream
// goes on over the socket itself: sendfile, splice and MSG_MORE work as in
// plaintext while the kernel encrypts and decrypts records. crypto/tls exposes
// the traffic secrets only through Config.KeyLogWriter; the key and IV are
// derived from them with HKDF-Expand-Label (RFC 8446, section 7.3). Nothing
// may follow the handshake that the kernel would not expect: the listener
// sends no session tickets, neither end sends KeyUpdate (crypto/tls never
// initiates one), and a connection ends with a TCP half-close, never a
// close_notify alert. Where the kernel has no kTLS, the connection stays on
// crypto/tls ([EncryptionTLS]).

// Linux UAPI constants (include/uapi/linux/tls.h); golang.org/x/sys has none.
const (
	solTLS                 = 282
	tlsTX                  = 1
	tlsRX                  = 2
	tls13Version           = 0x0304
	cipherAESGCM128        = 51
	cipherAESGCM256        = 52
	cipherChaCha20Poly1305 = 54
)

// recordsBeforeKTLS is the number of application-data records each direction
// has sent through crypto/tls when the keys are handed over: the preamble
// (sender to receiver) and the reply (receiver to sender), one Write each.
const recordsBeforeKTLS = 1

// hkdfExpandLabel is TLS 1.3's HKDF-Expand-Label (RFC 8446, section 7.1).
func hkdfExpandLabel(h func() hash.Hash, secret []byte, label string, context []byte, length int) ([]byte, error) {
	const prefix = "tls13 "
	info := binary.BigEndian.AppendUint16(nil, uint16(length))
	info = append(info, byte(len(prefix)+len(label)))
	info = append(info, prefix...)
	info = append(info, label...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	return hkdf.Expand(h, secret, string(info), length)
}

// suiteParams are what kTLS needs to know of a TLS 1.3 cipher suite.
type suiteParams struct {
	cipher uint16 // TLS_CIPHER_*
	hash   func() hash.Hash
	keyLen int
}

func paramsOf(suite uint16) (suiteParams, error) {
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		return suiteParams{cipherAESGCM128, sha256.New, 16}, nil
	case tls.TLS_AES_256_GCM_SHA384:
		return suiteParams{cipherAESGCM256, sha512.New384, 32}, nil
	case tls.TLS_CHACHA20_POLY1305_SHA256:
		return suiteParams{cipherChaCha20Poly1305, sha256.New, 32}, nil
	}
	return suiteParams{}, fmt.Errorf("cipher suite %s has no kTLS mapping", tls.CipherSuiteName(suite))
}

// trafficKey derives a direction's AEAD key and 12-byte IV from its traffic secret.
func trafficKey(suite uint16, secret []byte) (key, iv []byte, err error) {
	p, err := paramsOf(suite)
	if err != nil {
		return nil, nil, err
	}
	if key, err = hkdfExpandLabel(p.hash, secret, "key", nil, p.keyLen); err != nil {
		return nil, nil, err
	}
	if iv, err = hkdfExpandLabel(p.hash, secret, "iv", nil, 12); err != nil {
		return nil, nil, err
	}
	return key, iv, nil
}

// cryptoInfo encodes the kernel's struct tls12_crypto_info_<cipher> for one
// direction: the TLS 1.3 IV is split into the kernel's salt (first 4 bytes)
// and iv (last 8) for AES-GCM, and is all iv for ChaCha20-Poly1305; rec_seq
// is the next record's sequence number, big-endian.
func cryptoInfo(suite uint16, secret []byte, seq uint64) ([]byte, error) {
	p, err := paramsOf(suite)
	if err != nil {
		return nil, err
	}
	key, iv, err := trafficKey(suite, secret)
	if err != nil {
		return nil, err
	}
	b := binary.NativeEndian.AppendUint16(nil, tls13Version) // struct tls_crypto_info: host order
	b = binary.NativeEndian.AppendUint16(b, p.cipher)
	if p.cipher == cipherChaCha20Poly1305 {
		b = append(b, iv...) // iv[12], key[32], no salt
		b = append(b, key...)
	} else {
		b = append(b, iv[4:]...) // iv[8], key, salt[4]
		b = append(b, key...)
		b = append(b, iv[:4]...)
	}
	clear(key)
	return binary.BigEndian.AppendUint64(b, seq), nil
}

// errNoKTLS reports that the kernel does not offer kTLS; the connection is
// untouched and goes on over crypto/tls.
var errNoKTLS = errors.New("the kernel offers no kTLS")

// ktlsOff remembers that kTLS failed on this host, with the reason, so that
// later connections go straight to crypto/tls.
var ktlsOff atomic.Pointer[string]

// KTLS reports whether this host's kernel offers kTLS, and why not: it asks
// for the "tls" upper-layer protocol on a connected loopback socket, once per
// process (root may autoload the module; otherwise `modprobe tls`; a network
// namespace has no tcp_available_ulp of its own to read). A later failure
// to hand keys over turns it off for the rest of the process.
func KTLS() (bool, string) {
	ktlsProbe.Do(func() {
		if why := probeKTLS(); why != "" {
			ktlsOff.Store(&why)
		}
	})
	if r := ktlsOff.Load(); r != nil {
		return false, *r
	}
	return true, ""
}

var ktlsProbe sync.Once

// probeKTLS sets TCP_ULP "tls" on a throwaway connected socket ("": it works).
func probeKTLS() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Sprintf("cannot probe for kTLS: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return fmt.Sprintf("cannot probe for kTLS: %v", err)
	}
	defer c.Close()
	// The peer stays open until the probe is done: the kernel takes the
	// ULP only on an ESTABLISHED socket, and a peer's FIN ends that.
	a, err := ln.Accept()
	if err != nil {
		return fmt.Sprintf("cannot probe for kTLS: %v", err)
	}
	defer a.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return fmt.Sprintf("cannot probe for kTLS: %v", err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = unix.SetsockoptString(int(fd), unix.SOL_TCP, unix.TCP_ULP, "tls") })
	if serr != nil {
		return fmt.Sprintf("the kernel refuses TCP_ULP tls (%v): no kTLS; modprobe tls", serr)
	}
	return ""
}

// enableKTLS hands the connection's application keys to the kernel. tx and rx
// are the traffic secrets of what this end sends and receives; both
// directions have sent recordsBeforeKTLS records through crypto/tls. An error
// wrapping errNoKTLS leaves the socket as it was; any other leaves it
// unusable (the caller closes it).
func enableKTLS(c *net.TCPConn, suite uint16, tx, rx []byte) error {
	if ok, why := KTLS(); !ok {
		return fmt.Errorf("%w: %s", errNoKTLS, why)
	}
	txInfo, err := cryptoInfo(suite, tx, recordsBeforeKTLS)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoKTLS, err)
	}
	defer clear(txInfo)
	rxInfo, err := cryptoInfo(suite, rx, recordsBeforeKTLS)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoKTLS, err)
	}
	defer clear(rxInfo)
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if err := unix.SetsockoptString(int(fd), unix.SOL_TCP, unix.TCP_ULP, "tls"); err != nil {
			why := fmt.Sprintf("setsockopt TCP_ULP tls: %v (modprobe tls)", err)
			ktlsOff.Store(&why)
			serr = fmt.Errorf("%w: %s", errNoKTLS, why)
			return
		}
		if err := unix.SetsockoptString(int(fd), solTLS, tlsTX, string(txInfo)); err != nil {
			serr = fmt.Errorf("setsockopt TLS_TX: %w", err)
			return
		}
		if err := unix.SetsockoptString(int(fd), solTLS, tlsRX, string(rxInfo)); err != nil {
			serr = fmt.Errorf("setsockopt TLS_RX: %w", err)
		}
	}); err != nil {
		return err
	}
	if serr != nil && !errors.Is(serr, errNoKTLS) {
		// The socket is half handed over: this connection is lost, and later
		// ones use crypto/tls rather than fail the same way.
		why := fmt.Sprintf("the kernel refused the keys: %v", serr)
		ktlsOff.Store(&why)
	}
	return serr
}

// tlsHandshake runs the TLS handshake on a data connection (the listener's
// or the sender's side) with a fresh key log, and returns what kTLS needs.
type tlsSession struct {
	conn *tls.Conn
	log  *keyLog
}

// newTLSSession wraps c with cfg, collecting the traffic secrets when kTLS
// may be used.
func newTLSSession(c net.Conn, cfg *tls.Config, server, wantKTLS bool) *tlsSession {
	s := &tlsSession{}
	if wantKTLS {
		s.log = &keyLog{}
		cfg = cfg.Clone()
		cfg.KeyLogWriter = s.log
	}
	if server {
		s.conn = tls.Server(c, cfg)
	} else {
		s.conn = tls.Client(c, cfg)
	}
	return s
}

// toKernel tries to move the session to kTLS once the preamble and reply went
// through crypto/tls; it returns the connection to go on with. A non-nil
// error means the connection is lost.
func (s *tlsSession) toKernel(tcp *net.TCPConn, server bool) (*dataConn, error) {
	if s.log == nil {
		return &dataConn{tcp: tcp, tls: s.conn, enc: EncryptionTLS}, nil
	}
	defer s.log.wipe()
	client, srv, err := s.log.secrets()
	if err != nil {
		return &dataConn{tcp: tcp, tls: s.conn, enc: EncryptionTLS}, nil
	}
	defer clear(client)
	defer clear(srv)
	tx, rx := client, srv
	if server {
		tx, rx = srv, client
	}
	switch err := enableKTLS(tcp, s.conn.ConnectionState().CipherSuite, tx, rx); {
	case err == nil:
		return &dataConn{tcp: tcp, enc: EncryptionKTLS}, nil
	case errors.Is(err, errNoKTLS):
		return &dataConn{tcp: tcp, tls: s.conn, enc: EncryptionTLS}, nil
	default:
		return nil, err
	}
}
