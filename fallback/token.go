package fallback

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// TokenLen is the length of a [Token]: a 16-byte id and a 32-byte secret.
const TokenLen = 48

// Token is the capability for the data connections of one transfer: a random id
// (bytes 0-15), which a sender presents on each connection, and a random secret
// (bytes 16-47), which never appears on the data wire: a connection proves it
// knows the secret with an HMAC over its preamble, and every chunk header and ack
// carries a tag keyed by a per-connection key derived from it (see the package
// documentation). So a passive observer of one data connection learns the id but
// cannot open another connection, nor inject into one. A Token is valid from
// [Listener.Expect] until the release function that Expect returned is called,
// and it is bound to the one [chunk.Sink] it was registered with. Send it only
// over the authenticated control plane and never log it.
type Token [TokenLen]byte

// NewToken returns a fresh random token.
func NewToken() (Token, error) {
	var t Token
	if _, err := rand.Read(t[:]); err != nil {
		return Token{}, fmt.Errorf("fallback: new token: %w", err)
	}
	return t, nil
}

// id is the part of t a data connection presents on the wire.
func (t Token) id() [16]byte { return [16]byte(t[:16]) }

// secret is the part of t that never leaves the control plane.
func (t Token) secret() []byte { return t[16:] }

// String returns the token as 96 lowercase hex digits.
func (t Token) String() string { return hex.EncodeToString(t[:]) }

// ParseToken parses the form produced by [Token.String].
func ParseToken(s string) (Token, error) {
	var t Token
	if len(s) != 2*len(t) {
		return Token{}, fmt.Errorf("fallback: token must be %d hex digits, got %d characters", 2*len(t), len(s))
	}
	if _, err := hex.Decode(t[:], []byte(s)); err != nil {
		return Token{}, fmt.Errorf("fallback: token is not hex: %w", err)
	}
	return t, nil
}
