package fallback

import (
	"bytes"
	"testing"

	"github.com/rxfer/rxfer/chunk"
)

func FuzzParseHeader(f *testing.F) {
	f.Add(appendHeader(nil, chunk.Chunk{Index: 3, Offset: 1 << 20, Length: 4096, CRC: 0xdeadbeef}))
	f.Add(appendHeader(nil, chunk.Chunk{Index: 0, Offset: 0, Length: 0, CRC: 0}))
	f.Add(appendHeader(nil, chunk.Chunk{Index: 1, Offset: -1, Length: 1}))
	f.Add([]byte("RXFC"))
	f.Add(bytes.Repeat([]byte{0xff}, headerLen))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseHeader(b)
		if err != nil {
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
	f.Add(appendPreamble(nil, tok))
	f.Add(append([]byte("RXFD\x00\x02\x00\x00"), tok[:]...))
	f.Add(append([]byte("RXFD\x00\x01\x00\x01"), tok[:]...))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, _, err := parsePreamble(b)
		if err != nil {
			return
		}
		if got := appendPreamble(nil, tok); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding gives %x, input was %x", got, b)
		}
	})
}

func FuzzParseAck(f *testing.F) {
	f.Add(appendAck(nil, 7, chunk.StatusChecksum))
	f.Add([]byte{0, 0, 0, 1, 9, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		i, s, err := parseAck(b)
		if err != nil {
			return
		}
		if got := appendAck(nil, i, s); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding gives %x, input was %x", got, b)
		}
	})
}
