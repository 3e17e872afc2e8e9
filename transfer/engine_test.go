package transfer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rxfer/rxfer/internal/crc32c"

	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/rdma"
)

// pair is a source and a destination node in one process, joined by a real
// TCP data channel on loopback.
type pair struct {
	src, dst         *Node
	srcDir, dstDir   string
	srcRoot, dstRoot *Root
}

// newPair sets knobs for the test (both nodes); they are reset at its end.
func newPair(t *testing.T, k testKnobs, opts ...func(*Config)) *pair {
	t.Helper()
	knobs = k
	t.Cleanup(func() { knobs = testKnobs{} }) // registered first: runs after the nodes shut down
	p := &pair{srcDir: t.TempDir(), dstDir: t.TempDir()}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	var err error
	if p.srcRoot, err = OpenRoot(p.srcDir); err != nil {
		t.Fatal(err)
	}
	if p.dstRoot, err = OpenRoot(p.dstDir); err != nil {
		t.Fatal(err)
	}
	data, err := fallback.Listen("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { data.Close(); p.srcRoot.Close(); p.dstRoot.Close() })
	auto := RDMAConfig{Options: rdma.Options{GIDIndex: rdma.AutoGID}, Chunk: 64 << 10}
	srcCfg := Config{ID: "src", Root: p.srcRoot, ChunkSize: 64 << 10, Logger: log, RDMA: auto}
	dstCfg := Config{ID: "dst", Root: p.dstRoot, Data: data, Logger: log, RDMA: auto}
	for _, o := range opts {
		o(&srcCfg)
		o(&dstCfg)
	}
	p.src, p.dst = NewNode(srcCfg), NewNode(dstCfg)
	t.Cleanup(func() { p.src.Shutdown(); p.dst.Shutdown() }) // closes parked queue pairs
	return p
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func writeRandom(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// entries lists a directory's names, to show nothing stray was left.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func TestPushSizes(t *testing.T) {
	p := newPair(t, testKnobs{})
	for _, n := range []int{0, 1, 4095, 64 << 10, 64<<10 + 1, 3<<20 + 17} {
		name := filepath.Join(p.srcDir, "f")
		want := writeRandom(t, name, n)
		info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "/f", DestPath: "/out", Overwrite: true}, p.dst.LocalPeer(), nil)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, err := os.ReadFile(filepath.Join(p.dstDir, "out"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: destination differs (read err %v, %d bytes)", n, err, len(got))
		}
		if info.State != StateCommitted || info.Result == nil || info.Result.CRC32C != crc32c.Checksum(want) {
			t.Fatalf("%d bytes: info %+v, want committed with CRC32C %08x", n, info, crc32c.Checksum(want))
		}
		if r := info.Result; r.Setup <= 0 || r.Moving < 0 || r.Commit <= 0 || r.Setup+r.Moving+r.Commit > r.Duration {
			t.Fatalf("%d bytes: phases setup %v + moving %v + commit %v, want positive (moving may be 0) and within the whole %v",
				n, r.Setup, r.Moving, r.Commit, r.Duration)
		}
		if names := entries(t, p.dstDir); len(names) != 1 {
			t.Fatalf("%d bytes: destination directory holds %v, want only out", n, names)
		}
	}
}

func TestCorruptChunkIsResent(t *testing.T) {
	p := newPair(t, testKnobs{corruptChunk: func(i uint32, attempt int) bool { return i == 2 && attempt == 1 }})
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 5*64<<10)
	if _, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g"}, p.dst.LocalPeer(), nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "g")); !bytes.Equal(got, want) {
		t.Fatal("destination differs after a resent chunk")
	}
}

func TestCorruptChunkNeverCommits(t *testing.T) {
	p := newPair(t, testKnobs{corruptChunk: func(i uint32, _ int) bool { return i == 1 }})
	writeRandom(t, filepath.Join(p.srcDir, "f"), 5*64<<10)
	info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g"}, p.dst.LocalPeer(), nil)
	if !errors.Is(err, ErrCorrupt) || info.State != StateFailed {
		t.Fatalf("err %v, state %v; want ErrCorrupt and failed", err, info.State)
	}
	// Nothing at the final name; the verified chunks are kept for a resume.
	for _, name := range entries(t, p.dstDir) {
		if !strings.HasPrefix(name, partialMarker) {
			t.Fatalf("destination holds %s after a failed transfer, want only the kept partial file", name)
		}
	}
}

// blockingPeer holds Commit until the transfer is cancelled.
type blockingPeer struct {
	Peer
	committing chan struct{}
}

func (b blockingPeer) Commit(ctx context.Context, req CommitRequest) (CommitResponse, error) {
	close(b.committing)
	<-ctx.Done()
	return CommitResponse{}, context.Cause(ctx)
}

func TestCancelMidTransferLeavesNothing(t *testing.T) {
	p := newPair(t, testKnobs{})
	writeRandom(t, filepath.Join(p.srcDir, "f"), 1<<20)
	peer := blockingPeer{p.dst.LocalPeer(), make(chan struct{})}
	var wg sync.WaitGroup
	var err error
	var info Info
	wg.Go(func() {
		info, err = p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g"}, peer, nil)
	})
	<-peer.committing // every byte has moved; the file is not yet committed
	// Nothing at the final name while moving: the partial file (and its
	// journal) have partial names.
	for _, name := range entries(t, p.dstDir) {
		if !strings.HasPrefix(name, partialMarker) {
			t.Fatalf("want only partial names while moving, have %s", name)
		}
	}
	if _, cerr := p.src.Cancel(p.src.List()[0].ID, true); cerr != nil { // --discard
		t.Fatal(cerr)
	}
	wg.Wait()
	if !errors.Is(err, ErrCanceled) || info.State != StateCancelled {
		t.Fatalf("err %v, state %v; want ErrCanceled and cancelled", err, info.State)
	}
	if names := entries(t, p.dstDir); len(names) != 0 {
		t.Fatalf("destination holds %v after cancel, want nothing", names)
	}
	if in := p.dst.List()[0]; in.State != StateCancelled {
		t.Fatalf("destination's record is %v, want cancelled", in.State)
	}
}

func TestConcurrentPushes(t *testing.T) {
	p := newPair(t, testKnobs{})
	const n = 16
	want := make([][]byte, n)
	for i := range n {
		want[i] = writeRandom(t, filepath.Join(p.srcDir, "f"+string(rune('a'+i))), 200<<10+i)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			name := "f" + string(rune('a'+i))
			_, errs[i] = p.src.Push(context.Background(), PushRequest{SourcePath: name, DestPath: name}, p.dst.LocalPeer(), nil)
		})
	}
	wg.Wait()
	for i := range n {
		name := "f" + string(rune('a'+i))
		got, _ := os.ReadFile(filepath.Join(p.dstDir, name))
		if errs[i] != nil || !bytes.Equal(got, want[i]) {
			t.Errorf("%s: err %v, equal %v", name, errs[i], bytes.Equal(got, want[i]))
		}
	}
}
