package fallback

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/rxfer/rxfer/chunk"
)

// The targets below fuzz one frame each; FuzzStream (stream_fuzz_test.go) feeds whole
// connections to a Listener. Each asserts that a parse either fails with the package's
// sentinel or accepts exactly the bytes its encoder produces.

func FuzzParseHeader(f *testing.F) {
	f.Add(appendHeader(nil, chunk.Chunk{Index: 3, Offset: 1 << 20, Length: 4096, CRC: 0xdeadbeef}))
	f.Add(appendHeader(nil, chunk.Chunk{Index: 0, Offset: 0, Length: 0, CRC: 0}))
	f.Add(appendHeader(nil, chunk.Chunk{Index: 1, Offset: -1, Length: 1}))
	f.Add(appendHeader(nil, chunk.Chunk{Index: 1, Offset: 1<<63 - 1, Length: 1}))
	f.Add(appendHeader(nil, chunk.Chunk{Index: 1, Offset: 1<<63 - 1<<32, Length: 1<<32 - 1}))
	f.Add([]byte("RXFC"))
	f.Add(bytes.Repeat([]byte{0xff}, headerLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseHeader(b)
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			return
		}
		if c.Offset < 0 || c.Length == 0 || c.Offset+int64(c.Length) < c.Offset {
			t.Fatalf("accepted impossible chunk %+v", c)
		}
		if got := appendHeader(nil, c); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %+v gives %x, input was %x", c, got, b)
		}
	})
}

func FuzzParsePreamble(f *testing.F) {
	tok := Token{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	f.Add(appendPreamble(nil, tok, [nonceLen]byte{9}))
	f.Add(append([]byte("RXFD\x00\x01\x00\x00"), tok[:]...))
	f.Add(append([]byte("RXFD\x00\x02\x00\x01"), tok[:]...))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, version, err := parsePreamble(b)
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			// The listener answers replyBadVersion when the magic matched and the
			// version is not 0, so the version must be the sender's or 0.
			want := uint16(0)
			if len(b) == preambleLen && bytes.HasPrefix(b, preambleMagic[:]) {
				want = binary.BigEndian.Uint16(b[4:6])
			}
			if version != want {
				t.Fatalf("version %d reported for %x, want %d", version, b, want)
			}
			if len(b) == preambleLen && strings.Contains(err.Error(), hex.EncodeToString(b[8:24])) {
				t.Fatalf("error %q names the token id", err)
			}
			return
		}
		if version != protoVersion {
			t.Fatalf("accepted version %d", version)
		}
		if !bytes.Equal(p.id[:], b[8:24]) || !bytes.Equal(p.nonce[:], b[24:40]) || !bytes.Equal(p.proof[:], b[40:]) {
			t.Fatalf("parsed %+v from %x", p, b)
		}
		// Whatever parses is refused unless its proof holds for the token it names.
		if checkProof(tok, b) != bytes.Equal(b, appendPreamble(nil, tok, p.nonce)) {
			t.Fatalf("checkProof(%x) disagrees with re-encoding", b)
		}
	})
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []byte{replyOK, replyUnknownToken, replyBadVersion, replyBusy, replyNeedsTLS, 5, 0xff} {
		f.Add(appendReply(nil, s))
	}
	f.Add([]byte("RXFR"))
	f.Add([]byte("RXFD\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := parseReply(b)
		switch {
		case err == nil:
			if !bytes.Equal(b, appendReply(nil, replyOK)) {
				t.Fatalf("accepted reply %x, the only accepting one is %x", b, appendReply(nil, replyOK))
			}
		case errors.Is(err, ErrUnknownToken):
			if !bytes.Equal(b, appendReply(nil, replyUnknownToken)) {
				t.Fatalf("reply %x taken as unknown token", b)
			}
		case errors.Is(err, ErrReceiverBusy):
			if !bytes.Equal(b, appendReply(nil, replyBusy)) {
				t.Fatalf("reply %x taken as busy", b)
			}
		case errors.Is(err, ErrEncryptionRequired):
			if !bytes.Equal(b, appendReply(nil, replyNeedsTLS)) {
				t.Fatalf("reply %x taken as encryption required", b)
			}
		case !errors.Is(err, ErrBadHeader):
			t.Fatalf("error %v wraps none of ErrUnknownToken, ErrReceiverBusy, ErrEncryptionRequired, ErrBadHeader", err)
		}
	})
}

func FuzzParseAck(f *testing.F) {
	f.Add(appendAck(nil, 7, chunk.StatusChecksum))
	f.Add(appendAck(nil, 1<<32-1, chunk.StatusRejected))
	f.Add([]byte{0, 0, 0, 1, 9, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		i, s, err := parseAck(b)
		if err != nil {
			if !errors.Is(err, ErrBadHeader) {
				t.Fatalf("error %v does not wrap ErrBadHeader", err)
			}
			return
		}
		if !s.Valid() {
			t.Fatalf("accepted status %d", s)
		}
		if got := appendAck(nil, i, s); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding gives %x, input was %x", got, b)
		}
	})
}

// FuzzParseToken: a token travels as hex in the control plane; one that parses prints
// back as the same digits, and an error never repeats what was presented.
func FuzzParseToken(f *testing.F) {
	tok := Token{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	f.Add(tok.String())
	f.Add(strings.ToUpper(tok.String()))
	f.Add(tok.String()[:95] + "g")
	f.Add(tok.String() + "0")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 4*len(Token{}) {
			// Refused by length alone; long inputs only make the fuzzer minimize
			// strings.Contains's coverage for a minute at a time.
			return
		}
		got, err := ParseToken(s)
		if err != nil {
			if len(s) >= 8 && strings.Contains(err.Error(), s) {
				t.Fatalf("error %q repeats the presented token", err)
			}
			return
		}
		if got.String() != strings.ToLower(s) {
			t.Fatalf("ParseToken(%q) prints as %q", s, got.String())
		}
		if again, err := ParseToken(got.String()); err != nil || again != got {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}
