package rdma

import (
	"bytes"
	"errors"
	"testing"

	"github.com/rxfer/rxfer/chunk"
)

// Control messages come from the peer's SENDs: a parse either fails with
// errBadMessage or accepts exactly the bytes the encoder produces.

func FuzzParseChunkMsg(f *testing.F) {
	for _, m := range []chunkMsg{
		{Slot: 1, Chunk: chunk.Chunk{Index: 2, Offset: 3, Length: 4, CRC: 5}},
		{Slot: 1<<32 - 1, Chunk: chunk.Chunk{Index: 1<<32 - 1, Offset: 1<<63 - 1<<32, Length: 1<<32 - 1, CRC: 0xdeadbeef}},
		{Chunk: chunk.Chunk{Offset: 1<<63 - 1, Length: 1}},
		{Chunk: chunk.Chunk{Offset: -1, Length: 1}},
		{Chunk: chunk.Chunk{Length: 0}},
	} {
		f.Add(encodeMsg(func(b []byte) { putChunkMsg(b, m) }))
	}
	f.Add(encodeMsg(func(b []byte) { putAckMsg(b, ackMsg{Slot: 1, Index: 2}) }))
	f.Add([]byte("RXRC"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseChunkMsg(b)
		if err != nil {
			if !errors.Is(err, errBadMessage) {
				t.Fatalf("error %v does not wrap errBadMessage", err)
			}
			return
		}
		if c := m.Chunk; c.Offset < 0 || c.Length == 0 || c.Offset+int64(c.Length) < c.Offset {
			t.Fatalf("accepted impossible chunk %+v", c)
		}
		if got := encodeMsg(func(out []byte) { putChunkMsg(out, m) }); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %+v gives %x, input was %x", m, got, b)
		}
	})
}

func FuzzParseAckMsg(f *testing.F) {
	for _, m := range []ackMsg{
		{Slot: 1, Index: 2, Status: chunk.StatusChecksum},
		{Slot: 3, Index: 3, Status: chunk.StatusChecksum, RKey: 0x1234},
		{Slot: 1<<32 - 1, Index: 1<<32 - 1, Status: chunk.StatusRejected},
		{Status: 4},
	} {
		f.Add(encodeMsg(func(b []byte) { putAckMsg(b, m) }))
	}
	f.Add(encodeMsg(func(b []byte) { putChunkMsg(b, chunkMsg{Slot: 1, Chunk: chunk.Chunk{Index: 2, Length: 3}}) }))
	f.Add([]byte("RXRA"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseAckMsg(b)
		if err != nil {
			if !errors.Is(err, errBadMessage) {
				t.Fatalf("error %v does not wrap errBadMessage", err)
			}
			return
		}
		if !m.Status.Valid() {
			t.Fatalf("accepted status %d", m.Status)
		}
		if m.RKey != 0 && m.Status != chunk.StatusChecksum {
			t.Fatalf("accepted an rkey with status %d", m.Status)
		}
		if got := encodeMsg(func(out []byte) { putAckMsg(out, m) }); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %+v gives %x, input was %x", m, got, b)
		}
	})
}

// encodeMsg returns the msgLen bytes that put writes.
func encodeMsg(put func([]byte)) []byte {
	b := bytes.Repeat([]byte{0xa5}, msgLen) // put must clear what it does not set
	put(b)
	return b
}
