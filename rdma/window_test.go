package rdma

import (
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/testbedenv"
	"golang.org/x/sys/unix"
)

// memfdWindow maps size bytes of a fresh memfd MAP_SHARED, read-write, as the
// engine maps a region's window.
func memfdWindow(t *testing.T, size int) (*os.File, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("rdma-window-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	return f, mem
}

// newWindowPair connects a sender in window mode to a window receiver over mem.
func newWindowPair(t *testing.T, mem []byte, slotSize int) *pair {
	t.Helper()
	p := connectPair(t, func(sinfo EndpointInfo, sink *testSink) (*Receiver, EndpointInfo, []RemoteBuffer, error) {
		return NewReceiver(Options{}, sinfo, ReceiverConfig{Sink: sink, Window: mem, SlotSize: slotSize})
	}, func() error { return unix.Munmap(mem) }, // only after Close: the MR is gone
		func(s *Sender, rinfo EndpointInfo, bufs []RemoteBuffer) error {
			if want := (len(mem) + slotSize - 1) / slotSize; len(bufs) != want {
				t.Fatalf("%d slots, want %d", len(bufs), want)
			}
			return s.ConnectWindow(rinfo, bufs)
		})
	if !p.r.Window() {
		t.Fatal("NewReceiver with a Window made a staging receiver")
	}
	return p
}

func TestWindowReceiver(t *testing.T) {
	requireDevice(t)
	const chunkSize = 1 << 20
	for _, size := range []int{16 << 20, 3<<20 + 4097} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			checkResources(t)
			memf, mem := memfdWindow(t, size)
			p := newWindowPair(t, mem, chunkSize)
			src, data, chunks := sourceFile(t, t.TempDir(), size, chunkSize, uint64(size))
			res := runSend(t, p.s, Source{File: src}, chunks, 0, nil)
			if res.err != nil {
				t.Fatalf("Send: %v", res.err)
			}
			checkEveryChunkOnce(t, p, res, chunks)
			if got := p.r.InPlace(); got != int64(len(chunks)) {
				t.Errorf("%d chunks verified in place, want %d", got, len(chunks))
			}
			p.r.Close()
			if i := testbedenv.FirstDiff(mem, data); i >= 0 {
				t.Fatalf("window differs from the source at byte %d", i)
			}
			// The same bytes through the memfd (the mapping is MAP_SHARED) ...
			got := make([]byte, size)
			if _, err := memf.ReadAt(got, 0); err != nil || testbedenv.FirstDiff(got, data) >= 0 {
				t.Fatalf("memfd does not hold the window's bytes (%v)", err)
			}
			// ... and nothing went through the sink's file: no pwrite.
			if fi, err := p.sink.f.Stat(); err != nil || fi.Size() != 0 {
				t.Fatalf("sink file has %d bytes (%v); the window receiver must not write it", fi.Size(), err)
			}
			t.Logf("window: %d bytes in %d slots, %v, %.1f MB/s", size, len(chunks), res.elapsed.Round(time.Millisecond),
				float64(size)/res.elapsed.Seconds()/1e6)
		})
	}
}

// A corrupted chunk is re-sent into the same slot; a chunk whose index has
// no slot is refused without being sent.
func TestWindowResendAndReject(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	const chunkSize = 64 << 10
	_, mem := memfdWindow(t, 4*chunkSize)
	p := newWindowPair(t, mem, chunkSize)
	knobs.corrupt = func(c chunk.Chunk) bool { return c.Index == 2 && len(p.sink.landedFor(2)) == 0 }
	t.Cleanup(func() { knobs.corrupt = nil })
	src, data, chunks := sourceFile(t, t.TempDir(), 4*chunkSize, chunkSize, 9)
	chunks = append(chunks, chunk.Chunk{Index: 4, Offset: 0, Length: chunkSize, CRC: chunks[0].CRC})
	res := runSend(t, p.s, Source{File: src}, chunks, 0, func(c chunk.Chunk, err error) bool { return errors.Is(err, chunk.ErrChecksum) })
	if res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	if v := res.verdict[2]; len(v) != 2 || !errors.Is(v[0], chunk.ErrChecksum) || v[1] != nil {
		t.Errorf("chunk 2: done got %v; want a checksum error, then nil", v)
	}
	if v := res.verdict[4]; len(v) != 1 || !errors.Is(v[0], chunk.ErrRejected) {
		t.Errorf("chunk 4 (no slot): done got %v; want chunk.ErrRejected", v)
	}
	p.r.Close()
	if i := testbedenv.FirstDiff(mem, data); i >= 0 {
		t.Fatalf("window differs from the source at byte %d", i)
	}
}
