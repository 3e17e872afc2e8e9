package fallback

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
)

// FuzzStream's transfer: small chunks, so that the fuzzer reaches valid ones, a short
// last chunk, and a sink that lands the transfer fuzzBase bytes into its file (as a
// region window does), so a write at the header's offset instead of Admit's shows.
const (
	fuzzChunkSize = 16
	fuzzSize      = 3*fuzzChunkSize + 8
	fuzzBase      = 8
	fuzzMaxInput  = 64 << 10 // larger inputs say nothing more and only slow the fuzzer
)

// fuzzToken is the one token FuzzStream's listener expects.
var fuzzToken = Token{0xf0, 0x22, 0x5e, 0xed, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// fuzzAdmissible is FuzzStream's admission rule, shared by its sink and its model: a
// chunk of the fuzzSize-byte transfer at its own place, each index once.
func fuzzAdmissible(c chunk.Chunk, seen map[uint32]bool) bool {
	off := int64(c.Index) * fuzzChunkSize
	return !seen[c.Index] && off < fuzzSize && c.Offset == off && int64(c.Length) == min(fuzzChunkSize, fuzzSize-off)
}

// fuzzSink is a chunk.Sink that admits by fuzzAdmissible and records what it admitted
// and every verdict.
type fuzzSink struct {
	f *os.File

	mu       sync.Mutex
	seen     map[uint32]bool
	admitted []chunk.Chunk
	landed   map[uint32][]error
}

func (s *fuzzSink) File() *os.File { return s.f }

func (s *fuzzSink) Admit(c chunk.Chunk) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !fuzzAdmissible(c, s.seen) {
		return 0, fmt.Errorf("chunk %d at %d+%d is not part of the transfer", c.Index, c.Offset, c.Length)
	}
	s.seen[c.Index] = true
	s.admitted = append(s.admitted, c)
	return fuzzBase + c.Offset, nil
}

func (s *fuzzSink) Landed(c chunk.Chunk, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.landed[c.Index] = append(s.landed[c.Index], err)
}

// modelChunk is a chunk a correct receiver admits.
type modelChunk struct {
	c       chunk.Chunk
	payload []byte // the bytes the stream holds for it: shorter than c.Length if cut
}

// ok reports whether the chunk arrived whole and matches its CRC.
func (m modelChunk) ok() bool {
	return len(m.payload) == int(m.c.Length) && crc32c.Checksum(m.payload) == m.c.CRC
}

// streamModel is what a correct receiver does with one connection's bytes: the reply
// and acks it sends and the chunks it admits, reading exactly each header's Length
// bytes after it and stopping at the first malformed or refused header.
type streamModel struct {
	out    []byte // reply, then acks
	chunks []modelChunk
}

func modelStream(in []byte) streamModel {
	var m streamModel
	if len(in) < preambleBody {
		return m // the listener waits for the rest of the preamble, then sees EOF
	}
	p, version, err := parsePreamble(fuzzWire(in[:preambleBody]))
	switch {
	case err != nil && version != 0:
		m.out = appendReply(nil, replyBadVersion)
		return m
	case err != nil:
		return m
	case p.id != fuzzToken.id():
		m.out = appendReply(nil, replyUnknownToken)
		return m
	}
	m.out = appendReply(nil, replyOK)
	acks := receiverMACs(fuzzToken, p.nonce).out
	appendAck := func(b []byte, index uint32, status chunk.Status) []byte {
		return acks.seal(appendAck(b, index, status), ackLen)
	}
	seen := map[uint32]bool{}
	for rest := in[preambleBody:]; len(rest) >= headerLen; {
		c, err := parseHeader(rest[:headerLen])
		if err != nil {
			return m
		}
		rest = rest[headerLen:]
		if !fuzzAdmissible(c, seen) {
			m.out = appendAck(m.out, c.Index, chunk.StatusRejected)
			return m
		}
		seen[c.Index] = true
		mc := modelChunk{c: c, payload: rest[:min(len(rest), int(c.Length))]}
		m.chunks = append(m.chunks, mc)
		if len(mc.payload) < int(c.Length) {
			return m // cut: no ack, the stream is broken
		}
		rest = rest[c.Length:]
		status := chunk.StatusOK
		if !mc.ok() {
			status = chunk.StatusChecksum
		}
		m.out = appendAck(m.out, c.Index, status)
	}
	return m // a partial header is the end of the stream too
}

// preambleBody is the part of a preamble FuzzStream's inputs hold: fuzzWire
// adds the proof, computed with fuzzToken whatever id the input names.
const preambleBody = preambleLen - proofLen

// fuzzWire turns a FuzzStream input (a preamble without its proof, then chunk
// headers without tags, each followed by its payload) into the bytes a sender
// holding fuzzToken would send: the fuzzer could never guess an HMAC, so the
// harness adds them, and the fuzzing stays on what follows authentication.
func fuzzWire(in []byte) []byte {
	if len(in) < preambleBody {
		return in
	}
	out := append(bytes.Clone(in[:preambleBody]), preambleProof(fuzzToken, in[:preambleBody])...)
	mac := senderMACs(fuzzToken, [nonceLen]byte(in[24:40])).out
	for rest := in[preambleBody:]; len(rest) > 0; {
		if len(rest) < headerLen {
			return append(out, rest...)
		}
		out = mac.seal(append(out, rest[:headerLen]...), headerLen)
		n := min(int(binary.BigEndian.Uint32(rest[16:20])), len(rest)-headerLen)
		out = append(out, rest[headerLen:headerLen+n]...)
		rest = rest[headerLen+n:]
	}
	return out
}

// fuzzChunkBytes is a header and its payload.
func fuzzChunkBytes(c chunk.Chunk, payload []byte) []byte {
	return append(appendHeader(nil, c), payload...)
}

// fuzzStreamSeeds are connections a sender could open: whole and partial transfers,
// bad CRCs, repeats, cuts, refused and malformed headers, and bad preambles.
func fuzzStreamSeeds() [][]byte {
	data := make([]byte, fuzzSize)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	chunkAt := func(i uint32) []byte {
		off := int64(i) * fuzzChunkSize
		p := data[off:min(off+fuzzChunkSize, fuzzSize)]
		return fuzzChunkBytes(chunk.Chunk{Index: i, Offset: off, Length: uint32(len(p)), CRC: crc32c.Checksum(p)}, p)
	}
	pre := appendPreamble(nil, fuzzToken, [nonceLen]byte{7})[:preambleBody]
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	badCRC := chunkAt(1)
	badCRC[20] ^= 1
	other := fuzzToken
	other[0]++
	return [][]byte{
		cat(pre, chunkAt(0), chunkAt(1), chunkAt(2), chunkAt(3)),
		cat(pre, chunkAt(3), chunkAt(0)),
		cat(pre, badCRC, chunkAt(2)),
		cat(pre, chunkAt(0), chunkAt(0)),
		cat(pre, chunkAt(2)[:headerLen+5]),
		cat(pre, chunkAt(1), chunkAt(2)[:10]),
		cat(pre, chunkAt(0), bytes.Repeat([]byte{0xff}, headerLen)),
		cat(pre, fuzzChunkBytes(chunk.Chunk{Index: 0, Offset: 0, Length: 1<<32 - 1}, data)),
		cat(pre, fuzzChunkBytes(chunk.Chunk{Index: 1, Offset: 0, Length: fuzzChunkSize}, data[:fuzzChunkSize])),
		cat(pre, fuzzChunkBytes(chunk.Chunk{Index: 3, Offset: 3 * fuzzChunkSize, Length: fuzzChunkSize}, data[:fuzzChunkSize])),
		cat(pre),
		pre[:10],
		cat(appendPreamble(nil, other, [nonceLen]byte{8})[:preambleBody], chunkAt(0)),
		func() []byte { b := cat(pre, chunkAt(0)); b[5] = 1; return b }(),
		cat([]byte{tlsRecordHandshake}, pre[1:], chunkAt(0)),
		[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		nil,
	}
}

// FuzzStream feeds arbitrary connections to a real Listener: preamble, then chunk
// headers and payloads. The listener must answer exactly what modelStream says (or a
// prefix of it if it reset the connection over unread bytes), admit exactly the model's
// chunks, give each one verdict, and write nothing outside the admitted chunks.
func FuzzStream(f *testing.F) {
	for _, s := range fuzzStreamSeeds() {
		f.Add(s)
	}
	l, err := ListenConfig{PreambleTimeout: time.Minute}.Listen("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { l.Close() })
	addr := l.Addr().(*net.TCPAddr)
	dst, err := os.OpenFile(filepath.Join(f.TempDir(), "dst"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { dst.Close() })

	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > fuzzMaxInput {
			return
		}
		if err := dst.Truncate(0); err != nil {
			t.Fatal(err)
		}
		if err := dst.Truncate(fuzzBase + fuzzSize); err != nil {
			t.Fatal(err)
		}
		sink := &fuzzSink{f: dst, seen: map[uint32]bool{}, landed: map[uint32][]error{}}
		release := l.Expect(fuzzToken, sink)
		defer release()

		out, reset := fuzzConnect(t, addr, fuzzWire(in))
		release() // waits for the connection's handler: the sink's record is complete
		want := modelStream(in)
		if len(in) > 0 && in[0] == tlsRecordHandshake {
			// A TLS handshake: crypto/tls answers bytes that are not one with
			// an alert record (0x15), or nothing; no chunk is admitted.
			if len(out) > 0 && out[0] != 0x15 {
				t.Fatalf("listener answered a broken TLS handshake with %x, want a TLS alert or nothing", out)
			}
			checkSink(t, sink, nil)
			checkFile(t, dst, nil)
			return
		}
		if !bytes.Equal(out, want.out) && !(reset && bytes.HasPrefix(want.out, out)) {
			t.Fatalf("listener sent %x (reset: %v), want %x", out, reset, want.out)
		}
		checkSink(t, sink, want.chunks)
		checkFile(t, dst, want.chunks)
	})
}

// fuzzConnect sends in on a fresh connection, half-closes it and returns everything
// the listener sent until it closed the connection, and whether it ended in a reset
// (which the listener's close causes when bytes it did not read are left).
func fuzzConnect(t *testing.T, addr *net.TCPAddr, in []byte) (out []byte, reset bool) {
	c, err := net.DialTCP("tcp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute)) // a hang guard only
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		if _, err := c.Write(in); err == nil {
			c.CloseWrite()
		}
	}()
	out, err = io.ReadAll(c)
	<-wrote
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("listener kept the connection open for a minute after the input ended (%d bytes)", len(in))
	case err != nil && !isReset(err):
		t.Fatalf("read: %v", err)
	}
	return out, err != nil
}

// checkSink compares what the sink saw with the model: the same chunks admitted in
// the same order, and one verdict each that matches what arrived.
func checkSink(t *testing.T, s *fuzzSink, want []modelChunk) {
	t.Helper()
	if len(s.admitted) != len(want) {
		t.Fatalf("admitted %v, want %d chunks %v", s.admitted, len(want), want)
	}
	for i, mc := range want {
		if s.admitted[i] != mc.c {
			t.Fatalf("admission %d: %+v, want %+v (the listener read the stream out of step)", i, s.admitted[i], mc.c)
		}
		verdicts := s.landed[mc.c.Index]
		if len(verdicts) != 1 {
			t.Fatalf("chunk %d: %d verdicts %v, want 1", mc.c.Index, len(verdicts), verdicts)
		}
		err := verdicts[0]
		switch {
		case len(mc.payload) < int(mc.c.Length):
			if !errors.Is(err, ErrStreamBroken) {
				t.Fatalf("chunk %d cut after %d bytes: verdict %v, want ErrStreamBroken", mc.c.Index, len(mc.payload), err)
			}
		case mc.ok():
			if err != nil {
				t.Fatalf("chunk %d arrived intact: verdict %v", mc.c.Index, err)
			}
		case !errors.Is(err, chunk.ErrChecksum):
			t.Fatalf("chunk %d has a bad CRC: verdict %v, want ErrChecksum", mc.c.Index, err)
		}
	}
	if len(s.landed) != len(want) {
		t.Fatalf("verdicts for %d chunks, admitted %d: %v", len(s.landed), len(want), s.landed)
	}
}

// checkFile checks the destination: every byte outside the admitted chunks is still
// zero, a verified chunk holds its payload, and any other admitted chunk holds, byte
// for byte, what arrived or zero.
func checkFile(t *testing.T, f *os.File, want []modelChunk) {
	t.Helper()
	got := make([]byte, fuzzBase+fuzzSize+1)
	n, err := f.ReadAt(got, 0)
	if err != io.EOF || n != fuzzBase+fuzzSize {
		t.Fatalf("destination has %d bytes (%v), want %d", n, err, fuzzBase+fuzzSize)
	}
	got = got[:n]
	covered := make([]bool, n)
	for _, mc := range want {
		at := got[fuzzBase+mc.c.Offset:][:mc.c.Length]
		for i := range at {
			covered[fuzzBase+mc.c.Offset+int64(i)] = true
			if mc.ok() && at[i] != mc.payload[i] || at[i] != 0 && (i >= len(mc.payload) || at[i] != mc.payload[i]) {
				t.Fatalf("chunk %d byte %d is %#x; it arrived as %x", mc.c.Index, i, at[i], mc.payload)
			}
		}
	}
	for i, b := range got {
		if b != 0 && !covered[i] {
			t.Fatalf("byte %d of the destination is %#x, outside every admitted chunk", i, b)
		}
	}
}
