package fallback

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/extenttest"
)

// driveTree is drive for a tree: Send with opt (its Layout the tree's
// unless set) and a nil src.
func driveTree(t *testing.T, l *Listener, fx *extenttest.Tree, retries int, opt SendOptions) result {
	t.Helper()
	if opt.Layout == nil {
		opt.Layout = fx.Layout()
	}
	tok := expect(t, l, fx.Sink)
	return drive(t.Context(), l.Addr().String(), tok, &fixture{chunks: fx.Chunks}, retries, opt)
}

// extentModes are the ways a chunk's bytes travel: sendfile → splice,
// pread/write → splice, and crypto/tls → user-space copy (kTLS, where the
// kernel has it, is sendfile → splice again).
var extentModes = []struct {
	name string
	opt  func(*Listener) SendOptions
}{
	{"sendfile", func(*Listener) SendOptions { return SendOptions{Mode: SendFile} }},
	{"readwrite", func(*Listener) SendOptions { return SendOptions{Mode: ReadWrite} }},
	{"tls", func(l *Listener) SendOptions {
		return SendOptions{Encrypt: true, CertSHA256: l.CertSHA256(), NoKTLS: true}
	}},
}

// checkAllLanded asserts one nil verdict per chunk at both ends.
func checkAllLanded(t *testing.T, fx *extenttest.Tree, res result) {
	t.Helper()
	if res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	for _, c := range fx.Chunks {
		if v := res.verdicts[c.Index]; len(v) != 1 || v[0] != nil {
			t.Errorf("chunk %d: sender verdicts %v, want one nil", c.Index, v)
		}
		if v := fx.Sink.Verdicts(c.Index); len(v) != 1 || v[0] != nil {
			t.Errorf("chunk %d: receiver verdicts %v, want one nil", c.Index, v)
		}
	}
}

// Chunks that hold the tail of one file, small files whole, empty files and
// the head of the next land byte-exact in each file, and nothing around
// their extents changes, in every send and receive mode.
func TestExtentsRoundTrip(t *testing.T) {
	sizes := []int64{70000, 3, 0, 5000, 1, 0, 12288, 100000, 17, 65536, 0}
	for _, m := range extentModes {
		for _, streams := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/streams=%d", m.name, streams), func(t *testing.T) {
				t.Parallel()
				l := newListener(t, ListenConfig{})
				fx := extenttest.NewTree(t, sizes, 64<<10)
				if n := fx.MaxExtents(); n < 3 {
					t.Fatalf("the fixture's chunks span at most %d files; the test needs 3", n)
				}
				opt := m.opt(l)
				opt.Streams, opt.Window = streams, 2
				res := driveTree(t, l, fx, 0, opt)
				checkAllLanded(t, fx, res)
				fx.CheckDest(t, true)
			})
		}
	}
}

// A Layout may answer with bytes it read already (Data): every other
// extent given as memory, the rest as files, lands byte-exact in every mode.
func TestExtentsDataRoundTrip(t *testing.T) {
	sizes := []int64{70000, 3, 0, 5000, 1, 0, 12288, 100000, 17, 65536, 0}
	for _, m := range extentModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			l := newListener(t, ListenConfig{})
			fx := extenttest.NewTree(t, sizes, 64<<10)
			data := 0
			layout := extenttest.LayoutFunc(func(c chunk.Chunk) ([]chunk.Extent, error) {
				exts := fx.Span(fx.Srcs, 0, c)
				for i, e := range exts {
					if i%2 == 1 && e.File != nil {
						b := make([]byte, e.Length)
						if _, err := e.File.ReadAt(b, e.Offset); err != nil {
							return nil, err
						}
						exts[i] = chunk.Extent{Data: b, Length: e.Length}
						data++
					}
				}
				return exts, nil
			})
			opt := m.opt(l)
			opt.Streams, opt.Layout = 1, layout
			checkAllLanded(t, fx, driveTree(t, l, fx, 0, opt))
			fx.CheckDest(t, true)
			if data == 0 {
				t.Fatal("no extent went as Data")
			}
		})
	}
}

// One chunk of 1000 files of 4 KiB lands whole.
func TestExtentsManySmall(t *testing.T) {
	sizes := make([]int64, 1000)
	for i := range sizes {
		sizes[i] = 4096
	}
	for _, m := range extentModes {
		t.Run(m.name, func(t *testing.T) {
			l := newListener(t, ListenConfig{})
			fx := extenttest.NewTree(t, sizes, 1000*4096)
			if len(fx.Chunks) != 1 || fx.MaxExtents() != 1000 {
				t.Fatalf("%d chunks of up to %d extents, want one of 1000", len(fx.Chunks), fx.MaxExtents())
			}
			opt := m.opt(l)
			opt.Streams = 1
			checkAllLanded(t, fx, driveTree(t, l, fx, 0, opt))
			fx.CheckDest(t, true)
		})
	}
}

// Random trees (empty files, files smaller and larger than a chunk) and
// chunk sizes land byte-exact: a property test of the extent walks.
func TestExtentsRandomTrees(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 4))
	for round := range 6 {
		m := extentModes[round%len(extentModes)]
		sizes := make([]int64, 1+r.IntN(40))
		for i := range sizes {
			switch r.IntN(4) {
			case 0:
				sizes[i] = 0
			case 1:
				sizes[i] = 1 + r.Int64N(100)
			default:
				sizes[i] = r.Int64N(300 << 10)
			}
		}
		chunkSize := 1 + r.Int64N(256<<10)
		t.Run(fmt.Sprintf("%d/%s/files=%d/chunk=%d", round, m.name, len(sizes), chunkSize), func(t *testing.T) {
			l := newListener(t, ListenConfig{})
			fx := extenttest.NewTree(t, sizes, chunkSize)
			opt := m.opt(l)
			opt.Streams = 2
			checkAllLanded(t, fx, driveTree(t, l, fx, 0, opt))
			fx.CheckDest(t, true)
		})
	}
}

// A byte changed in the middle extent of a chunk (the source changed after
// its CRC was computed) fails that chunk with ErrChecksum at both ends; the
// CRC runs across the extents.
func TestExtentsChecksumMismatch(t *testing.T) {
	for _, m := range extentModes {
		t.Run(m.name, func(t *testing.T) {
			l := newListener(t, ListenConfig{})
			fx := extenttest.NewTree(t, []int64{3000, 2000, 5000, 8192}, 8192)
			// Chunk 0 is file 0, 2000 bytes of file 1 whole and the head of file 2.
			if ext := fx.Span(fx.Srcs, 0, fx.Chunks[0]); ext[2].File != fx.Srcs[1] || ext[2].Length != 2000 {
				t.Fatalf("chunk 0's middle extent is %+v, want file 1 whole", ext[2])
			}
			if _, err := fx.Srcs[1].WriteAt([]byte{^fx.Data[3000+1000]}, 1000); err != nil {
				t.Fatal(err)
			}
			opt := m.opt(l)
			opt.Streams = 1
			res := driveTree(t, l, fx, 0, opt)
			if res.err != nil {
				t.Fatalf("Send: %v", res.err)
			}
			if v := res.verdicts[0]; len(v) != 1 || !errors.Is(v[0], chunk.ErrChecksum) {
				t.Fatalf("chunk 0: sender verdicts %v, want one ErrChecksum", v)
			}
			if v := fx.Sink.Verdicts(0); len(v) != 1 || !errors.Is(v[0], chunk.ErrChecksum) {
				t.Fatalf("chunk 0: receiver verdicts %v, want one ErrChecksum", v)
			}
			for _, c := range fx.Chunks[1:] {
				if v := res.verdicts[c.Index]; len(v) != 1 || v[0] != nil {
					t.Errorf("chunk %d: sender verdicts %v, want one nil", c.Index, v)
				}
			}
		})
	}
}

// A Sink whose extents do not add up to the chunk's length fails the chunk
// with ErrReceiverIO, naming the problem, before a byte is written.
func TestExtentsThatDoNotAddUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		fix  func([]chunk.Extent) []chunk.Extent
		want string
	}{
		{"short", func(e []chunk.Extent) []chunk.Extent { e[len(e)-2].Length--; return e }, "add up to"},
		{"long", func(e []chunk.Extent) []chunk.Extent { e[len(e)-2].Length++; return e }, "more than"},
		{"no file", func(e []chunk.Extent) []chunk.Extent { e[1].File = nil; return e }, "no file"},
	} {
		for _, m := range extentModes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				l := newListener(t, ListenConfig{})
				fx := extenttest.NewTree(t, []int64{3000, 2000, 5000}, 10000)
				right := fx.Sink.Extents
				fx.Sink.Extents = func(c chunk.Chunk) []chunk.Extent { return tc.fix(right(c)) }
				opt := m.opt(l)
				opt.Streams = 1
				res := driveTree(t, l, fx, 0, opt)
				if !errors.Is(res.err, ErrStreamBroken) {
					t.Errorf("Send: %v, want the stream ended (ErrStreamBroken)", res.err)
				}
				if v := res.verdicts[0]; len(v) != 1 || !errors.Is(v[0], chunk.ErrReceiverIO) {
					t.Fatalf("sender verdicts %v, want one ErrReceiverIO", v)
				}
				v := fx.Sink.Verdicts(0)
				if len(v) != 1 || !errors.Is(v[0], chunk.ErrReceiverIO) || !strings.Contains(v[0].Error(), tc.want) {
					t.Fatalf("receiver verdicts %v, want one ErrReceiverIO saying %q", v, tc.want)
				}
				fx.CheckDest(t, false)
			})
		}
	}
}

// A Layout that fails for a chunk, or gives extents that do not add up,
// fails that chunk alone: nothing of it is sent, the stream goes on.
func TestLayoutErrorFailsTheChunk(t *testing.T) {
	broken := errors.New("source file vanished")
	for _, m := range extentModes {
		t.Run(m.name, func(t *testing.T) {
			l := newListener(t, ListenConfig{})
			fx := extenttest.NewTree(t, []int64{3000, 2000, 5000, 9000}, 4096)
			right := fx.Layout()
			opt := m.opt(l)
			opt.Streams = 1
			opt.Layout = extenttest.LayoutFunc(func(c chunk.Chunk) ([]chunk.Extent, error) {
				e, err := right.Extents(c)
				switch c.Index {
				case 1:
					return nil, broken
				case 2:
					e[1].Length++
				}
				return e, err
			})
			res := driveTree(t, l, fx, 0, opt)
			if res.err != nil {
				t.Fatalf("Send: %v (a layout error must not break the stream)", res.err)
			}
			if v := res.verdicts[1]; len(v) != 1 || !errors.Is(v[0], broken) {
				t.Errorf("chunk 1: verdicts %v, want one wrapping the layout's error", v)
			}
			if v := res.verdicts[2]; len(v) != 1 || v[0] == nil || !strings.Contains(v[0].Error(), "more than") {
				t.Errorf("chunk 2: verdicts %v, want one naming extents that add up to more than the chunk", v)
			}
			for _, i := range []uint32{1, 2} {
				if v := fx.Sink.Verdicts(i); len(v) != 0 {
					t.Errorf("chunk %d reached the receiver: %v", i, v)
				}
			}
			for _, c := range fx.Chunks {
				if c.Index != 1 && c.Index != 2 {
					if v := res.verdicts[c.Index]; len(v) != 1 || v[0] != nil {
						t.Errorf("chunk %d: verdicts %v, want one nil", c.Index, v)
					}
				}
			}
		})
	}
}

// A chunk the ExtentSink refuses is answered as Admit's refusals are: no
// Landed, nothing written.
func TestExtentSinkRefusal(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := extenttest.NewTree(t, []int64{3000, 2000}, 5000)
	fx.Sink.Refuse = func(c chunk.Chunk) error { return fmt.Errorf("verified before: %w", chunk.ErrAlreadyVerified) }
	res := driveTree(t, l, fx, 0, SendOptions{Streams: 1})
	if res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	if v := res.verdicts[0]; len(v) != 1 || !errors.Is(v[0], chunk.ErrAlreadyVerified) {
		t.Fatalf("verdicts %v, want one ErrAlreadyVerified", v)
	}
	if v := fx.Sink.Verdicts(0); len(v) != 0 {
		t.Fatalf("Landed called for a refused chunk: %v", v)
	}
	fx.CheckDest(t, false)
}

// A chunk whose files the ExtentSink cannot create or open (no space or
// inodes left) is answered ErrReceiverIO, not "rejected": the source then
// says the destination's file system is full or failing.
func TestExtentSinkReceiverIO(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := extenttest.NewTree(t, []int64{3000, 2000}, 5000)
	fx.Sink.Refuse = func(c chunk.Chunk) error {
		return fmt.Errorf("%w: creating f: no space left on device", chunk.ErrReceiverIO)
	}
	res := driveTree(t, l, fx, 0, SendOptions{Streams: 1})
	if v := res.verdicts[0]; len(v) != 1 || !errors.Is(v[0], chunk.ErrReceiverIO) {
		t.Fatalf("verdicts %v (Send: %v), want one ErrReceiverIO", v, res.err)
	}
	if v := fx.Sink.Verdicts(0); len(v) != 0 {
		t.Fatalf("Landed called for a refused chunk: %v", v)
	}
	fx.CheckDest(t, false)
}

// A single-file source sent through chunk.SingleFile lands in a plain Sink:
// the wire does not change with a Layout.
func TestSingleFileLayoutToPlainSink(t *testing.T) {
	for _, m := range extentModes {
		t.Run(m.name, func(t *testing.T) {
			l := newListener(t, ListenConfig{})
			fx := newFixture(t, 5*4096+9, 4096)
			tok := expect(t, l, fx.sink)
			opt := m.opt(l)
			opt.Streams, opt.Layout = 2, chunk.SingleFile{File: fx.src}
			src := fx.src
			fx.src = nil // Send must not need it
			res := drive(t.Context(), l.Addr().String(), tok, fx, 0, opt)
			fx.src = src
			if res.err != nil {
				t.Fatalf("Send: %v", res.err)
			}
			fx.checkDest(t)
		})
	}
}

func TestSendWithoutSource(t *testing.T) {
	err := Send(t.Context(), "127.0.0.1:1", Token{}, nil, nil, nil, SendOptions{})
	if err == nil || !strings.Contains(err.Error(), "Layout") {
		t.Fatalf("Send with neither src nor Layout: %v, want an error naming SendOptions.Layout", err)
	}
}
