// Package pki is rxfer's certificate plumbing: a small CA that issues node
// and client certificates (`rxfer certs init`), identities read from a
// certificate's SANs, and TLS 1.3 configurations whose certificates, keys
// and CAs are re-read when their files change, so a rotated certificate is
// used by new connections without a restart.
//
// Identities follow SPIFFE's URI form: a node is spiffe://TRUST-DOMAIN/node/ID
// (or, for certificates from another CA, any DNS SAN), a client is
// spiffe://TRUST-DOMAIN/client/NAME.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
)

// Kind says what an identity is: a node (a daemon) or a client (a person or program).
type Kind int

const (
	// KindNode is a daemon: it may call the Peer service.
	KindNode Kind = iota + 1
	// KindClient is a person or program calling the Transfer service.
	KindClient
)

func (k Kind) String() string {
	switch k {
	case KindNode:
		return "node"
	case KindClient:
		return "client"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Identity is who a certificate names.
type Identity struct {
	Kind        Kind
	Name        string // node ID or client name
	TrustDomain string // empty for an identity taken from a DNS SAN
}

// URI is the identity's SPIFFE ID, or "dns:NAME" for one taken from a DNS SAN.
func (id Identity) URI() string {
	if id.TrustDomain == "" {
		return "dns:" + id.Name
	}
	return "spiffe://" + id.TrustDomain + "/" + id.Kind.String() + "/" + id.Name
}

// String is "node a (spiffe://T/node/a)": how errors and logs name an identity.
func (id Identity) String() string {
	return fmt.Sprintf("%s %s (%s)", id.Kind, id.Name, id.URI())
}

// ErrNoIdentity is returned for a certificate that names neither a SPIFFE
// node or client nor a DNS name.
var ErrNoIdentity = errors.New("certificate carries no rxfer identity")

// namePattern is what a node ID, client name or trust domain may be: the
// characters of a DNS name, so every identity can also be a DNS SAN.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$`)

// CheckName reports whether s can be a node ID, client name or trust domain.
func CheckName(what, s string) error {
	if !namePattern.MatchString(s) {
		return fmt.Errorf("%s %.64q: want 1 to 128 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", what, s)
	}
	return nil
}

// FromCertificate reads the identity a certificate names: its one spiffe://
// URI SAN of the form spiffe://TD/node/ID or spiffe://TD/client/NAME, else
// (a certificate without any spiffe:// URI) its first DNS SAN, which names a node.
func FromCertificate(c *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		id, err := parseSPIFFE(u.Host, u.Path, u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "")
		if err != nil {
			return Identity{}, fmt.Errorf("%w: URI SAN %.128q: %w", ErrNoIdentity, u.String(), err)
		}
		found = append(found, id)
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return Identity{}, fmt.Errorf("%w: %d spiffe:// URI SANs (%s, %s...): a certificate names one identity", ErrNoIdentity, len(found), found[0].URI(), found[1].URI())
	}
	for _, d := range c.DNSNames {
		if CheckName("DNS SAN", d) == nil {
			return Identity{Kind: KindNode, Name: strings.ToLower(d)}, nil
		}
	}
	return Identity{}, fmt.Errorf("%w: it has neither a URI SAN spiffe://TRUST-DOMAIN/node/ID or spiffe://TRUST-DOMAIN/client/NAME nor a DNS SAN (subject %.128q); issue one with rxfer certs init", ErrNoIdentity, c.Subject.String())
}

func parseSPIFFE(host, path string, extra bool) (Identity, error) {
	if extra {
		return Identity{}, errors.New("a SPIFFE ID has no port, user, query or fragment")
	}
	if err := CheckName("trust domain", host); err != nil {
		return Identity{}, err
	}
	kind, name, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || !strings.HasPrefix(path, "/") {
		return Identity{}, errors.New("want spiffe://TRUST-DOMAIN/node/ID or spiffe://TRUST-DOMAIN/client/NAME")
	}
	id := Identity{Name: name, TrustDomain: strings.ToLower(host)}
	switch kind {
	case "node":
		id.Kind = KindNode
	case "client":
		id.Kind = KindClient
	default:
		return Identity{}, fmt.Errorf("path segment %.32q: want node or client", kind)
	}
	if err := CheckName(kind+" name", name); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// NamesHost reports whether the node certificate c, whose identity is id,
// names host: host is the node's ID, or one of the certificate's DNS or IP SANs.
func NamesHost(c *x509.Certificate, id Identity, host string) bool {
	if id.Kind != KindNode {
		return false
	}
	if strings.EqualFold(host, id.Name) {
		return true
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		for _, a := range c.IPAddresses {
			if a.Equal(ip) {
				return true
			}
		}
		return false
	}
	for _, d := range c.DNSNames {
		if strings.EqualFold(d, host) {
			return true
		}
	}
	return false
}

// ParseURI parses an identity's URI as Identity.URI writes it
// (spiffe://TD/node/ID, spiffe://TD/client/NAME or dns:NAME).
func ParseURI(s string) (Identity, error) {
	if name, ok := strings.CutPrefix(s, "dns:"); ok {
		if err := CheckName("node name", name); err != nil {
			return Identity{}, err
		}
		return Identity{Kind: KindNode, Name: strings.ToLower(name)}, nil
	}
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return Identity{}, fmt.Errorf("identity %.128q: want spiffe://TRUST-DOMAIN/KIND/NAME or dns:NAME", s)
	}
	host, path, _ := strings.Cut(rest, "/")
	id, err := parseSPIFFE(host, "/"+path, strings.ContainsAny(rest, "?#@:"))
	if err != nil {
		return Identity{}, fmt.Errorf("identity %.128q: %w", s, err)
	}
	return id, nil
}
