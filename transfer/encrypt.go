package transfer

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/rxfer/rxfer/fallback"
)

// DataEncryption is the policy for encrypting the TCP data channel.
type DataEncryption int

// Data-channel encryption policies. The zero value means the node's own
// setting (Config.DataEncryption), which itself defaults to auto.
const (
	EncryptDefault DataEncryption = iota
	// EncryptAuto encrypts across the network and not on loopback: a source
	// encrypts unless the data address is a loopback one; a destination
	// requires it unless the source reached it from a loopback address.
	EncryptAuto
	// EncryptOn always encrypts (a destination refuses plaintext).
	EncryptOn
	// EncryptOff does not ask for encryption (a source still encrypts for a
	// destination that requires it; a destination offers none).
	EncryptOff
)

// String returns "default", "auto", "on" or "off".
func (e DataEncryption) String() string {
	switch e {
	case EncryptDefault:
		return "default"
	case EncryptAuto:
		return "auto"
	case EncryptOn:
		return "on"
	case EncryptOff:
		return "off"
	}
	return fmt.Sprintf("DataEncryption(%d)", int(e))
}

// ParseDataEncryption parses "auto", "on" or "off".
func ParseDataEncryption(s string) (DataEncryption, error) {
	switch s {
	case "auto":
		return EncryptAuto, nil
	case "on":
		return EncryptOn, nil
	case "off":
		return EncryptOff, nil
	}
	return 0, fmt.Errorf("%w: data encryption %s (want auto, on or off)", ErrInvalid, Quote(s))
}

// loopbackHost reports whether addr ("host:port" or a bare host) names this
// host: localhost, 127.0.0.0/8 or ::1. An empty address (an in-process peer)
// counts as loopback.
func loopbackHost(addr string) bool {
	if addr == "" {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// requireEncryption tells whether the destination refuses plaintext data
// connections from client (the source's control-plane address).
func (n *Node) requireEncryption(client string) bool {
	switch n.cfg.DataEncryption {
	case EncryptOn:
		return true
	case EncryptOff:
		return false
	}
	return !loopbackHost(client)
}

// certOf is the data listener's certificate fingerprint for the Prepare reply
// (nil: the listener offers no TLS).
func certOf(l *fallback.Listener) []byte {
	if sum := l.CertSHA256(); sum != ([32]byte{}) {
		return sum[:]
	}
	return nil
}

// encryptTCP decides whether the source encrypts its data connections to ch
// and fills in opt; the destination's requirement wins over "off".
func (p *push) encryptTCP(ch TCPChannel, opt *fallback.SendOptions) error {
	mode := p.encryption
	if mode == EncryptDefault {
		mode = p.node.cfg.DataEncryption
	}
	encrypt := ch.RequireTLS
	switch mode {
	case EncryptOn:
		encrypt = true
	case EncryptAuto, EncryptDefault:
		encrypt = encrypt || !loopbackHost(ch.Addr)
	}
	if !encrypt {
		return nil
	}
	if len(ch.CertSHA256) != 32 {
		return fmt.Errorf("%w: data-channel encryption is %s for this copy, but destination %s offers none (its serve --data-encryption is off)",
			ErrTransportUnavailable, mode, p.rec.info.DestNode)
	}
	opt.Encrypt, opt.CertSHA256, opt.NoKTLS = true, [32]byte(ch.CertSHA256), p.node.cfg.NoKTLS
	return nil
}

// setEncryption records how the transfer's data connections are protected.
func (r *record) setEncryption(e fallback.Encryption) {
	r.mu.Lock()
	r.info.DataEncryption = e.String()
	r.mu.Unlock()
}

// DataConnection implements fallback.ConnObserver.
func (in *incoming) DataConnection(e fallback.Encryption) { in.rec.setEncryption(e) }
