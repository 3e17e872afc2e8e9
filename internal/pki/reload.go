package pki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Sentinels for why a peer's certificate was refused; wrapped with details.
var (
	// ErrNoCertificate: the peer presented no certificate.
	ErrNoCertificate = errors.New("no certificate presented")
	// ErrUntrusted: the certificate does not chain to the configured CA.
	ErrUntrusted = errors.New("certificate not signed by a trusted CA")
	// ErrExpired: the certificate is outside its validity window.
	ErrExpired = errors.New("certificate expired or not yet valid")
	// ErrWrongIdentity: the certificate is valid but names someone else.
	ErrWrongIdentity = errors.New("certificate names the wrong identity")
)

// stamp identifies one version of a file cheaply: a rename or rewrite
// changes the inode, size or modification time.
type stamp struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

func statStamp(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(st.Dev), st.Ino
	}
	return s, nil
}

// KeyPair is a certificate and private key read from files and re-read,
// at most on each handshake, when either file changes. A change that does
// not load (a half-written pair, a certificate Check refuses) keeps the
// previous pair and is retried on the next handshake.
type KeyPair struct {
	certFile, keyFile string
	// Check, if not nil, must accept every certificate loaded after the
	// first (a node's certificate must keep naming the node).
	Check func(Identity) error
	// OnReload, if not nil, hears of every reload attempt: the identity
	// and certificate now in use, and the error if the new files were refused.
	OnReload func(id Identity, leaf *x509.Certificate, err error)

	mu     sync.Mutex
	stamps [2]stamp
	cert   *tls.Certificate
	id     Identity
	gen    uint64 // pairs loaded: 1 after LoadKeyPair, +1 per reload that took
}

// LoadKeyPair reads a PEM certificate (chain) and its key; the leaf must carry an identity.
func LoadKeyPair(certFile, keyFile string) (*KeyPair, error) {
	k := &KeyPair{certFile: certFile, keyFile: keyFile}
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certificate %s: %w", certFile, err)
		}
	}
	return &pair, nil
}

// reload loads the files if their stamps changed; k.mu is held or k is new.
func (k *KeyPair) reload() error {
	var st [2]stamp
	for i, f := range []string{k.certFile, k.keyFile} {
		s, err := statStamp(f)
		if err != nil {
			return err
		}
		st[i] = s
	}
	if k.cert != nil && st == k.stamps {
		return nil
	}
	pair, err := loadPair(k.certFile, k.keyFile)
	if err != nil {
		return err
	}
	id, err := FromCertificate(pair.Leaf)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", k.certFile, err)
	}
	if k.cert != nil && k.Check != nil {
		if err := k.Check(id); err != nil {
			return fmt.Errorf("certificate %s: %w", k.certFile, err)
		}
	}
	k.cert, k.id, k.stamps = pair, id, st
	k.gen++
	return nil
}

// Current returns the pair to use now, reloading it first if its files changed.
func (k *KeyPair) Current() (*tls.Certificate, Identity) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refresh()
	return k.cert, k.id
}

// refresh reloads the pair if its files changed and tells OnReload; k.mu is held.
func (k *KeyPair) refresh() {
	old := k.cert
	err := k.reload()
	if k.OnReload != nil && (err != nil || k.cert != old) {
		k.OnReload(k.id, k.cert.Leaf, err)
	}
}

// Generation counts the pairs loaded so far, reloading first if the files
// changed: a connection made under an older generation presented a
// certificate that has since been replaced.
func (k *KeyPair) Generation() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refresh()
	return k.gen
}

// Identity is who the current certificate names.
func (k *KeyPair) Identity() Identity {
	_, id := k.Current()
	return id
}

// CAPool is a file of PEM CA certificates, re-read when it changes.
type CAPool struct {
	file  string
	mu    sync.Mutex
	stamp stamp
	pool  *x509.CertPool
	gen   uint64 // pools loaded: 1 after LoadCAPool, +1 per reload that took
}

// LoadCAPool reads a PEM file holding one or more CA certificates.
func LoadCAPool(file string) (*CAPool, error) {
	p := &CAPool{file: file}
	if err := p.reload(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *CAPool) reload() error {
	s, err := statStamp(p.file)
	if err != nil {
		return fmt.Errorf("CA file: %w", err)
	}
	if p.pool != nil && s == p.stamp {
		return nil
	}
	b, err := os.ReadFile(p.file)
	if err != nil {
		return fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return fmt.Errorf("CA file %s: %w", p.file, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return fmt.Errorf("CA file %s holds no PEM CERTIFICATE", p.file)
	}
	p.pool, p.stamp = pool, s
	p.gen++
	return nil
}

// Generation counts the pools loaded so far, re-reading the file first if
// it changed (a file that does not load changes nothing).
func (p *CAPool) Generation() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reload()
	return p.gen
}

// Pool returns the CAs to trust now, re-reading the file if it changed (a
// file that does not load keeps the previous pool).
func (p *CAPool) Pool() *x509.CertPool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reload()
	return p.pool
}

// Verify checks that chain (leaf first) chains to the pool for usage and
// returns the leaf's identity. Its errors wrap ErrNoCertificate,
// ErrUntrusted, ErrExpired or ErrNoIdentity and name the certificate.
func (p *CAPool) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, ErrNoCertificate
	}
	leaf := chain[0]
	id, idErr := FromCertificate(leaf)
	who := describeCert(leaf, id, idErr)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: p.Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	now := time.Now()
	switch {
	case err == nil:
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && now.After(leaf.NotAfter):
		return Identity{}, fmt.Errorf("%w: %s expired at %s: issue a new one (rxfer certs init, or your CA)", ErrExpired, who, leaf.NotAfter.UTC().Format(time.RFC3339))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return Identity{}, fmt.Errorf("%w: %s is not valid before %s (is a clock wrong?)", ErrExpired, who, leaf.NotBefore.UTC().Format(time.RFC3339))
	case errors.As(err, &unknown):
		return Identity{}, fmt.Errorf("%w: %s was issued by %.128q, which is not in %s", ErrUntrusted, who, leaf.Issuer.String(), p.file)
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return Identity{}, fmt.Errorf("%w: %s is not for %s (its extended key usage forbids it)", ErrUntrusted, who, usageName(usage))
	default:
		return Identity{}, fmt.Errorf("%w: %s: %w", ErrUntrusted, who, err)
	}
	if idErr != nil {
		return Identity{}, idErr
	}
	return id, nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "serving (serverAuth)"
	}
	return "client authentication (clientAuth)"
}

// describeCert names a certificate for an error: its identity (or subject) and serial.
func describeCert(c *x509.Certificate, id Identity, idErr error) string {
	if idErr == nil {
		return fmt.Sprintf("certificate of %s, serial %x,", id, c.SerialNumber)
	}
	return fmt.Sprintf("certificate %.128q, serial %x,", c.Subject.String(), c.SerialNumber)
}

// ServerConfig is a TLS 1.3 server configuration presenting cert's current
// pair. With requestClient it asks every client for a certificate but does
// not judge it: the caller verifies it (CAPool.Verify) after the handshake,
// so a refused client gets an RPC error that says why, rather than a
// handshake alert that cannot.
func ServerConfig(cert *KeyPair, requestClient bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, _ := cert.Current()
			return c, nil
		},
	}
	if requestClient {
		cfg.ClientAuth = tls.RequestClientCert
	}
	return cfg
}

// Client is what a TLS client (the CLI, or a node calling a peer) verifies
// servers with and presents when asked.
type Client struct {
	// CA verifies servers' certificates.
	CA *CAPool
	// Cert, if not nil, is presented as the client certificate.
	Cert *KeyPair

	handshakes atomic.Uint64
}

// NewClient returns a Client verifying servers with ca and presenting cert
// (may be nil). It resumes no sessions: a resumed session carries the
// certificates of its first handshake, which a rotation may have replaced.
func NewClient(ca *CAPool, cert *KeyPair) *Client {
	return &Client{CA: ca, Cert: cert}
}

// Generation changes whenever the CA file or the client certificate or
// key is replaced (it re-reads them if their files changed). A connection
// made under another generation trusts or presents what was replaced:
// connection pools redial it.
func (c *Client) Generation() uint64 {
	g := c.CA.Generation()
	if c.Cert != nil {
		g += c.Cert.Generation() // both only grow, so the sum changes when either does
	}
	return g
}

// Handshakes counts the TLS handshakes this Client's configurations have
// verified a server in (accepted or not): what connection reuse saves.
func (c *Client) Handshakes() uint64 { return c.handshakes.Load() }

// Config is a TLS 1.3 client configuration for dialling the node at host:
// the server's certificate must chain to CA, be a node certificate, and
// name host (its node ID, a DNS SAN or an IP SAN).
func (c *Client) Config(host string) *tls.Config {
	return c.config(func(chain []*x509.Certificate) error {
		id, err := c.CA.Verify(chain, x509.ExtKeyUsageServerAuth)
		if err != nil {
			return fmt.Errorf("node at %.256s: %w", host, err)
		}
		if !NamesHost(chain[0], id, host) {
			return fmt.Errorf("%w: the node at %.256s presented %s, but node %.256s was meant: the certificate names neither that node ID nor that host (DNS or IP SAN)", ErrWrongIdentity, host, id, host)
		}
		return nil
	})
}

// PinnedConfig (c may be nil: no client certificate) is a TLS 1.3 client configuration that accepts exactly the
// server certificate whose DER has SHA-256 pin (a one-copy destination's
// fresh self-signed certificate, announced over an authenticated channel).
func (c *Client) PinnedConfig(pin []byte) *tls.Config {
	return c.config(func(chain []*x509.Certificate) error {
		if len(chain) == 0 {
			return ErrNoCertificate
		}
		if sum := sha256.Sum256(chain[0].Raw); string(sum[:]) != string(pin) {
			return fmt.Errorf("%w: the destination's certificate (SHA-256 %x) is not the one the client announced (%x)", ErrWrongIdentity, sum[:8], pin[:min(len(pin), 8)])
		}
		return nil
	})
}

func (c *Client) config(verify func([]*x509.Certificate) error) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verification is VerifyConnection's: it reads the CA file as it
		// is now and checks the identity, with errors that say why.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if c != nil {
				c.handshakes.Add(1)
			}
			return verify(cs.PeerCertificates)
		},
	}
	if c != nil && c.Cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := c.Cert.Current()
			return cert, nil
		}
	}
	return cfg
}

// Fingerprint is the SHA-256 of a certificate's DER, as PinnedConfig wants it.
func Fingerprint(c *x509.Certificate) []byte {
	sum := sha256.Sum256(c.Raw)
	return sum[:]
}
