// Package extenttest is the test fixture of chunks that span several files
// (chunk.ExtentSink, chunk.Layout), shared by the transports' tests: a tree
// of source files, the chunks cut from the concatenation of their data, a
// Layout over them and an ExtentSink over destination files that hold each
// file's data between guard bytes, so that a byte landing outside its
// extent shows.
package extenttest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
)

// Guard is how many bytes of GuardByte surround each destination file's data.
const (
	Guard     = 100
	GuardByte = 0xa5
)

// Sink is a chunk.ExtentSink that lands chunks where Extents says and
// records every verdict.
type Sink struct {
	Extents func(chunk.Chunk) []chunk.Extent
	Refuse  func(chunk.Chunk) error // optional: a non-nil error refuses the chunk

	fileCalled atomic.Bool // a receiver must not call File on an ExtentSink
	mu         sync.Mutex
	landed     map[uint32][]error
}

// File records that it was called (a bug) and returns nil.
func (s *Sink) File() *os.File { s.fileCalled.Store(true); return nil }

// Admit refuses: a receiver must call AdmitExtents instead.
func (s *Sink) Admit(chunk.Chunk) (int64, error) {
	return 0, errors.New("extenttest: Admit called on an ExtentSink")
}

// AdmitExtents returns Refuse's error, or the chunk's extents.
func (s *Sink) AdmitExtents(c chunk.Chunk) ([]chunk.Extent, error) {
	if s.Refuse != nil {
		if err := s.Refuse(c); err != nil {
			return nil, err
		}
	}
	return s.Extents(c), nil
}

// Landed records the verdict.
func (s *Sink) Landed(c chunk.Chunk, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.landed == nil {
		s.landed = map[uint32][]error{}
	}
	s.landed[c.Index] = append(s.landed[c.Index], err)
}

// Verdicts returns the errors Landed got for chunk i so far.
func (s *Sink) Verdicts(i uint32) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.landed[i]...)
}

// Tree is a directory tree's files, its chunks, and a Sink (Extents set)
// over its destination files.
type Tree struct {
	Sizes  []int64
	Starts []int64 // of each file in the concatenation
	Data   []byte  // the concatenation
	Srcs   []*os.File
	Dsts   []*os.File // file i holds its data at Guard, between guard bytes
	Chunks []chunk.Chunk
	Sink   *Sink
}

// NewTree writes files of the given sizes (pseudo-random bytes) and
// destination files full of GuardByte, and cuts the concatenation into
// chunks of chunkSize with their CRCs.
func NewTree(tb testing.TB, sizes []int64, chunkSize int64) *Tree {
	tb.Helper()
	dir := tb.TempDir()
	t := &Tree{Sizes: sizes}
	var total int64
	for _, n := range sizes {
		t.Starts = append(t.Starts, total)
		total += n
	}
	t.Data = make([]byte, total)
	rand.NewChaCha8([32]byte{byte(len(sizes)), byte(total), byte(total >> 8)}).Read(t.Data)
	for i, n := range sizes {
		t.Srcs = append(t.Srcs, openFile(tb, filepath.Join(dir, fmt.Sprintf("src%d", i)), t.Data[t.Starts[i]:t.Starts[i]+n]))
		t.Dsts = append(t.Dsts, openFile(tb, filepath.Join(dir, fmt.Sprintf("dst%d", i)), bytes.Repeat([]byte{GuardByte}, int(n)+2*Guard)))
	}
	for off := int64(0); off < total; off += chunkSize {
		n := min(chunkSize, total-off)
		t.Chunks = append(t.Chunks, chunk.Chunk{Index: uint32(len(t.Chunks)), Offset: off, Length: uint32(n), CRC: crc32c.Checksum(t.Data[off : off+n])})
	}
	t.Sink = &Sink{Extents: func(c chunk.Chunk) []chunk.Extent { return t.Span(t.Dsts, Guard, c) }}
	return t
}

// openFile writes data to name and returns it opened read-write.
func openFile(tb testing.TB, name string, data []byte) *os.File {
	tb.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	return f
}

// Span returns the extents of chunk c in files (file i's data at offset
// shift in it): a run per file it touches, a zero-length extent for each
// empty file that starts inside it, and a zero-length extent without a file
// first and last.
func (t *Tree) Span(files []*os.File, shift int64, c chunk.Chunk) []chunk.Extent {
	end := c.Offset + int64(c.Length)
	exts := []chunk.Extent{{}}
	for i, f := range files {
		from, to := max(t.Starts[i], c.Offset), min(t.Starts[i]+t.Sizes[i], end)
		if from < to || t.Sizes[i] == 0 && t.Starts[i] >= c.Offset && t.Starts[i] < end {
			exts = append(exts, chunk.Extent{File: f, Offset: shift + from - t.Starts[i], Length: max(0, to-from)})
		}
	}
	return append(exts, chunk.Extent{})
}

// Layout is the chunk.Layout of the source files.
func (t *Tree) Layout() chunk.Layout {
	return LayoutFunc(func(c chunk.Chunk) ([]chunk.Extent, error) { return t.Span(t.Srcs, 0, c), nil })
}

// LayoutFunc is a chunk.Layout made of a function.
type LayoutFunc func(chunk.Chunk) ([]chunk.Extent, error)

// Extents calls f.
func (f LayoutFunc) Extents(c chunk.Chunk) ([]chunk.Extent, error) { return f(c) }

// MaxExtents is the most non-empty extents one chunk has.
func (t *Tree) MaxExtents() int {
	most := 0
	for _, c := range t.Chunks {
		n := 0
		for _, e := range t.Span(t.Srcs, 0, c) {
			if e.Length > 0 {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// CheckDest checks every destination file: the guard bytes around its data
// untouched, no byte past them, and its data the source's (landed) or still
// all guard bytes; and that nobody called the Sink's File.
func (t *Tree) CheckDest(tb testing.TB, landed bool) {
	tb.Helper()
	for i, f := range t.Dsts {
		got, err := os.ReadFile(f.Name())
		if err != nil {
			tb.Fatal(err)
		}
		n := t.Sizes[i]
		if int64(len(got)) != n+2*Guard {
			tb.Fatalf("file %d: %d bytes, want %d (written past its extents)", i, len(got), n+2*Guard)
		}
		for j, b := range got {
			if (j < Guard || int64(j) >= Guard+n) && b != GuardByte {
				tb.Fatalf("file %d: byte %d, outside its data, was written", i, j)
			}
		}
		want := bytes.Repeat([]byte{GuardByte}, int(n))
		if landed {
			want = t.Data[t.Starts[i] : t.Starts[i]+n]
		}
		if body := got[Guard : Guard+n]; !bytes.Equal(body, want) {
			tb.Fatalf("file %d: data differs from the expected (landed=%v) at byte %d", i, landed, firstDiff(body, want))
		}
	}
	if t.Sink.fileCalled.Load() {
		tb.Fatal("the receiver called File on an ExtentSink")
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
