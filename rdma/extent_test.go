package rdma

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/extenttest"
)

// treeSizes make chunks of 64 KiB that hold the tail of one file, small and
// empty files whole and the head of the next.
var treeSizes = []int64{70000, 3, 0, 5000, 1, 0, 12288, 100000, 17, 65536, 0}

// landExtents lands each chunk of a tree byte-exact in its files, touching
// nothing around its extents, and returns the CRC of what landed; on this
// host (no device needed).
func TestLandExtents(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sizes     []int64
		chunkSize int64
	}{
		{"tail-whole-head", treeSizes, 64 << 10},
		{"1000x4KiB", func() []int64 {
			s := make([]int64, 1000)
			for i := range s {
				s[i] = 4096
			}
			return s
		}(), 1000 * 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := extenttest.NewTree(t, tc.sizes, tc.chunkSize)
			if fx.MaxExtents() < 3 {
				t.Fatalf("the fixture's chunks span at most %d files; the test needs 3", fx.MaxExtents())
			}
			for _, c := range fx.Chunks {
				b := fx.Data[c.Offset : c.Offset+int64(c.Length)]
				exts, _ := fx.Sink.AdmitExtents(c)
				sum, err := landExtents(b, c, exts)
				if err != nil || sum != c.CRC {
					t.Fatalf("chunk %d: CRC %08x, %v; want %08x", c.Index, sum, err, c.CRC)
				}
			}
			fx.CheckDest(t, true)
		})
	}
}

// A byte changed in a chunk's middle extent changes the CRC landExtents
// reads back; extents that do not add up are refused before a byte lands.
func TestLandExtentsRefusals(t *testing.T) {
	fx := extenttest.NewTree(t, []int64{3000, 2000, 5000}, 10000)
	c := fx.Chunks[0]
	b := append([]byte(nil), fx.Data...)
	exts, _ := fx.Sink.AdmitExtents(c)
	for _, tc := range []struct {
		name string
		exts []chunk.Extent
		want string
	}{
		{"short", edit(exts, func(e []chunk.Extent) { e[3].Length-- }), "add up to"},
		{"long", edit(exts, func(e []chunk.Extent) { e[3].Length++ }), "more than"},
		{"no file", edit(exts, func(e []chunk.Extent) { e[1].File = nil }), "no file"},
	} {
		if _, err := landExtents(b, c, tc.exts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	fx.CheckDest(t, false)
	b[3000+1000] ^= 1 // in file 1, the middle extent
	if sum, err := landExtents(b, c, exts); err != nil || sum == c.CRC {
		t.Fatalf("a changed byte: CRC %08x, %v; want a mismatch with %08x", sum, err, c.CRC)
	}
}

// edit returns a copy of exts changed by f.
func edit(exts []chunk.Extent, f func([]chunk.Extent)) []chunk.Extent {
	e := append([]chunk.Extent(nil), exts...)
	f(e)
	return e
}

// readExtents stages a chunk from its extents in order; a layout error, bad
// extents or a source file shorter than its extent fail the chunk.
func TestReadExtents(t *testing.T) {
	fx := extenttest.NewTree(t, treeSizes, 64<<10)
	for _, c := range fx.Chunks {
		b := make([]byte, c.Length)
		if err := readExtents(fx.Layout(), c, b); err != nil {
			t.Fatalf("chunk %d: %v", c.Index, err)
		}
		if string(b) != string(fx.Data[c.Offset:c.Offset+int64(c.Length)]) {
			t.Fatalf("chunk %d: staged bytes differ from the source", c.Index)
		}
	}
	c := fx.Chunks[1]
	broken := errors.New("gone")
	failing := extenttest.LayoutFunc(func(chunk.Chunk) ([]chunk.Extent, error) { return nil, broken })
	if err := readExtents(failing, c, make([]byte, c.Length)); !errors.Is(err, broken) {
		t.Errorf("a failing layout: %v, want its error", err)
	}
	long := extenttest.LayoutFunc(func(c chunk.Chunk) ([]chunk.Extent, error) {
		return edit(fx.Span(fx.Srcs, 0, c), func(e []chunk.Extent) { e[1].Length++ }), nil
	})
	if err := readExtents(long, c, make([]byte, c.Length)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("extents longer than the chunk: %v", err)
	}
	if err := fx.Srcs[7].Truncate(10); err != nil { // the 100000-byte file, in chunk 1
		t.Fatal(err)
	}
	if err := readExtents(fx.Layout(), c, make([]byte, c.Length)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a source file shorter than its extent: %v, want io.ErrUnexpectedEOF", err)
	}
}

// A window receiver (chunks land in one memory) refuses an ExtentSink, and
// a Layout source refuses File, Bytes and Register, before any device is
// touched.
func TestExtentSetUpRefusals(t *testing.T) {
	fx := extenttest.NewTree(t, []int64{10}, 10)
	_, _, _, err := NewReceiver(Options{}, EndpointInfo{}, ReceiverConfig{Sink: fx.Sink, Window: make([]byte, 8192), SlotSize: 4096})
	if err == nil || !strings.Contains(err.Error(), "ExtentSink") {
		t.Errorf("a window receiver with an ExtentSink: %v, want a refusal naming ExtentSink", err)
	}
	for _, src := range []Source{
		{Layout: fx.Layout(), File: os.Stdin},
		{Layout: fx.Layout(), Bytes: make([]byte, 10)},
		{Layout: fx.Layout(), Register: true},
	} {
		if _, err := (&Sender{}).prepareSource(src, 1); err == nil || !strings.Contains(err.Error(), "Source.Layout") {
			t.Errorf("prepareSource(%+v): %v, want a refusal naming Source.Layout", src, err)
		}
	}
}

// treePair is a sender and a staging receiver whose sink is fx's.
func treePair(t *testing.T, fx *extenttest.Tree, slots, slotSize int) *pair {
	t.Helper()
	return connectPair(t, func(sinfo EndpointInfo, _ *testSink) (*Receiver, EndpointInfo, []RemoteBuffer, error) {
		return NewReceiver(Options{}, sinfo, ReceiverConfig{Sink: fx.Sink, Slots: slots, SlotSize: slotSize})
	}, nil, (*Sender).Connect)
}

// A tree's chunks, staged from their extents and landed in the sink's,
// arrive byte-exact in every file with nothing around them changed; one
// chunk of 1000 files of 4 KiB too. Needs the testbed.
func TestExtentsTransfer(t *testing.T) {
	requireDevice(t)
	small := make([]int64, 1000)
	for i := range small {
		small[i] = 4096
	}
	for _, tc := range []struct {
		name      string
		sizes     []int64
		chunkSize int64
	}{{"tail-whole-head", treeSizes, 64 << 10}, {"1000x4KiB", small, 1000 * 4096}} {
		t.Run(tc.name, func(t *testing.T) {
			checkResources(t)
			fx := extenttest.NewTree(t, tc.sizes, tc.chunkSize)
			p := treePair(t, fx, 4, int(tc.chunkSize))
			res := runSend(t, p.s, Source{Layout: fx.Layout()}, fx.Chunks, 0, nil)
			if res.err != nil {
				t.Fatalf("Send: %v", res.err)
			}
			for _, c := range fx.Chunks {
				if v := res.verdict[c.Index]; len(v) != 1 || v[0] != nil {
					t.Errorf("chunk %d: done got %v; want one nil", c.Index, v)
				}
				if v := fx.Sink.Verdicts(c.Index); len(v) != 1 || v[0] != nil {
					t.Errorf("chunk %d: Landed got %v; want one nil", c.Index, v)
				}
			}
			p.r.Close()
			fx.CheckDest(t, true)
		})
	}
}

// A byte changed in a chunk's middle extent at the source fails it with
// ErrChecksum at both ends; a sink whose extents do not add up fails its
// chunk with ErrReceiverIO and nothing lands. Needs the testbed.
func TestExtentsTransferFailures(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	fx := extenttest.NewTree(t, []int64{3000, 2000, 5000, 8192}, 8192)
	if _, err := fx.Srcs[1].WriteAt([]byte{^fx.Data[3000+1000]}, 1000); err != nil {
		t.Fatal(err)
	}
	right := fx.Sink.Extents
	fx.Sink.Extents = func(c chunk.Chunk) []chunk.Extent {
		if c.Index == 1 {
			return edit(right(c), func(e []chunk.Extent) { e[1].Length-- })
		}
		return right(c)
	}
	p := treePair(t, fx, 4, 8192)
	res := runSend(t, p.s, Source{Layout: fx.Layout()}, fx.Chunks, 0, nil)
	if res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	for i, want := range map[uint32]error{0: chunk.ErrChecksum, 1: chunk.ErrReceiverIO} {
		if v := res.verdict[i]; len(v) != 1 || !errors.Is(v[0], want) {
			t.Errorf("chunk %d: done got %v; want one %v", i, v, want)
		}
		if v := fx.Sink.Verdicts(i); len(v) != 1 || !errors.Is(v[0], want) {
			t.Errorf("chunk %d: Landed got %v; want one %v", i, v, want)
		}
	}
	p.r.Close()
	// Chunk 1 is the tail of file 2 (from its byte 3192) and the first 6384
	// bytes of file 3: none of it landed.
	for _, r := range []struct {
		file     int
		from, to int
	}{{2, 3192, 5000}, {3, 0, 6384}} {
		got, err := os.ReadFile(fx.Dsts[r.file].Name())
		if err != nil {
			t.Fatal(err)
		}
		for j := r.from; j < r.to; j++ {
			if got[extenttest.Guard+j] != extenttest.GuardByte {
				t.Fatalf("file %d byte %d was written although its chunk's extents did not add up", r.file, j)
			}
		}
	}
}
