package fallback

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// Token authenticates the data connections of one transfer: 128 random bits from
// crypto/rand. It is valid from [Listener.Expect] until the release function that
// Expect returned is called, and it is bound to the one [chunk.Sink] it was registered with.
// A Token is a capability: send it only over the authenticated control plane and never
// log it.
type Token [16]byte

// NewToken returns a fresh random token.
func NewToken() (Token, error) {
	var t Token
	if _, err := rand.Read(t[:]); err != nil {
		return Token{}, fmt.Errorf("fallback: new token: %w", err)
	}
	return t, nil
}

// String returns the token as 32 lowercase hex digits.
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
