package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// DefaultValidity is how long `rxfer certs init` certificates are valid.
const DefaultValidity = 365 * 24 * time.Hour

// clockSkew backdates NotBefore, so a certificate works at once on a host
// whose clock is a little behind.
const clockSkew = 5 * time.Minute

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// Validity is a certificate's validity window.
type Validity struct {
	NotBefore, NotAfter time.Time
}

// ValidFor is a window from a little before now for d.
func ValidFor(d time.Duration) Validity {
	now := time.Now()
	return Validity{NotBefore: now.Add(-clockSkew), NotAfter: now.Add(d)}
}

func newKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // 127 bits: positive, within RFC 5280's 20 bytes
}

// NewCA makes a self-signed ECDSA P-256 CA for trustDomain.
func NewCA(trustDomain string, v Validity) (*CA, error) {
	if err := CheckName("trust domain", trustDomain); err != nil {
		return nil, err
	}
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: "rxfer CA " + trustDomain, Organization: []string{"rxfer"}},
		NotBefore: v.NotBefore, NotAfter: v.NotAfter, IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:     []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue signs a new key's certificate for id: a node certificate carries the
// URI SAN, a DNS SAN of its ID and the given hosts (DNS names or IPs), and
// serves as both a server and a client certificate; a client certificate
// carries the URI SAN and is for client authentication only.
func (ca *CA) Issue(id Identity, hosts []string, v Validity) (*x509.Certificate, crypto.Signer, error) {
	if err := CheckName(id.Kind.String()+" name", id.Name); err != nil {
		return nil, nil, err
	}
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn, Subject: pkix.Name{CommonName: id.Name, Organization: []string{"rxfer " + id.Kind.String()}},
		NotBefore: v.NotBefore, NotAfter: v.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		URIs: []*url.URL{{Scheme: "spiffe", Host: id.TrustDomain, Path: "/" + id.Kind.String() + "/" + id.Name}},
	}
	switch id.Kind {
	case KindNode:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = []string{id.Name}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if err := CheckName("host", h); err != nil {
				return nil, nil, err
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	case KindClient:
		if len(hosts) > 0 {
			return nil, nil, fmt.Errorf("client %s: a client certificate names no hosts", id.Name)
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, nil, fmt.Errorf("identity kind %v: want node or client", id.Kind)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// KeyPEM encodes a private key as PKCS #8 PEM.
func KeyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadCA reads a CA certificate and key written by Init.
func LoadCA(certFile, keyFile string) (*CA, error) {
	pair, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate with a signing key", certFile)
	}
	return &CA{Cert: pair.Leaf, Key: signer}, nil
}

// Node is a node to issue a certificate for: its ID and extra hosts
// (DNS names or IP addresses it is reached at).
type Node struct {
	ID    string
	Hosts []string
}

// InitOptions say what Init writes.
type InitOptions struct {
	Dir         string
	TrustDomain string
	Nodes       []Node
	Clients     []string
	Validity    Validity
	// Force replaces existing files; without it Init writes nothing if any exists.
	Force bool
}

// ErrExists is returned by Init when a file it would write exists.
var ErrExists = errors.New("file exists")

// Init writes a new CA (ca.crt, ca.key) and a certificate and key for each
// node (node-ID.crt, node-ID.key) and client (client-NAME.crt, .key) into
// Dir, keys with mode 0600, and returns the paths written.
func Init(o InitOptions) ([]string, error) {
	type file struct {
		name string
		data []byte
		mode os.FileMode
	}
	var files []file
	add := func(base string, c *x509.Certificate, k crypto.Signer) error {
		kp, err := KeyPEM(k)
		if err != nil {
			return err
		}
		files = append(files, file{base + ".crt", CertPEM(c), 0o644}, file{base + ".key", kp, 0o600})
		return nil
	}
	ca, err := NewCA(o.TrustDomain, o.Validity)
	if err != nil {
		return nil, err
	}
	if err := add("ca", ca.Cert, ca.Key); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, n := range o.Nodes {
		c, k, err := ca.Issue(Identity{Kind: KindNode, Name: n.ID, TrustDomain: o.TrustDomain}, n.Hosts, o.Validity)
		if err != nil {
			return nil, err
		}
		if seen["node-"+n.ID] {
			return nil, fmt.Errorf("node %s named twice", n.ID)
		}
		seen["node-"+n.ID] = true
		if err := add("node-"+n.ID, c, k); err != nil {
			return nil, err
		}
	}
	for _, name := range o.Clients {
		c, k, err := ca.Issue(Identity{Kind: KindClient, Name: name, TrustDomain: o.TrustDomain}, nil, o.Validity)
		if err != nil {
			return nil, err
		}
		if seen["client-"+name] {
			return nil, fmt.Errorf("client %s named twice", name)
		}
		seen["client-"+name] = true
		if err := add("client-"+name, c, k); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	if !o.Force { // all or nothing: refuse before writing any file
		for _, f := range files {
			if _, err := os.Lstat(filepath.Join(o.Dir, f.name)); err == nil {
				return nil, fmt.Errorf("%w: %s (pass --force to replace the certificates in %s)", ErrExists, filepath.Join(o.Dir, f.name), o.Dir)
			}
		}
	}
	var paths []string
	for _, f := range files {
		p := filepath.Join(o.Dir, f.name)
		if err := WriteFileAtomic(p, f.data, f.mode); err != nil {
			return paths, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// WriteFileAtomic writes data to a temporary file beside path with mode,
// then renames it over path, so a reader (a reloading daemon) sees either
// the old file or the whole new one.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after a successful rename there is nothing to remove
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Ephemeral makes a self-signed certificate valid for a day, for a server
// that lives for one copy and is identified by its fingerprint alone.
func Ephemeral() (tls.Certificate, error) {
	key, err := newKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	sn, err := serial()
	if err != nil {
		return tls.Certificate{}, err
	}
	v := ValidFor(24 * time.Hour)
	tmpl := &x509.Certificate{SerialNumber: sn, Subject: pkix.Name{CommonName: "rxfer one-copy destination"},
		NotBefore: v.NotBefore, NotAfter: v.NotAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
