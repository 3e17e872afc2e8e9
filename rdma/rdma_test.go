package rdma

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rxfer/rxfer/internal/crc32c"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/testbedenv"
	"github.com/rxfer/rxfer/verbs"
)

// requireDevice skips a test that needs RDMA on a host without a usable
// device and fails it in the testbed (make testbed TESTBED_PKGS=./rdma/).
func requireDevice(t *testing.T) {
	t.Helper()
	testbedenv.RequireRDMA(t, Check(Options{}))
}

// vmIP is the testbed VM's address (the RoCE v2 GID's), or invalid.
func vmIP() netip.Addr {
	a, _ := netip.ParseAddr(os.Getenv("RXFER_VM_IP"))
	return a
}

func TestHostReportsUnavailable(t *testing.T) {
	if Check(Options{}) == nil {
		t.Skip("this node has a usable RDMA device")
	}
	if testbedenv.Active() {
		t.Fatal("testbed: no usable RDMA device")
	}
	_, err := Inventory()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no RDMA device") && !errors.Is(err, verbs.ErrNotSupported) {
		t.Errorf("Inventory: %v; want ErrUnavailable saying there is no RDMA device (or no cgo)", err)
	}
	err = Check(Options{})
	if !errors.Is(err, ErrUnavailable) || len(err.Error()) <= len(ErrUnavailable.Error())+2 {
		t.Errorf("Check: %v; want ErrUnavailable with a reason", err)
	}
	if _, _, err := NewSender(Options{}, netip.Addr{}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("NewSender: %v; want ErrUnavailable", err)
	}
	if _, _, _, err := NewReceiver(Options{}, EndpointInfo{}, ReceiverConfig{Slots: 8, SlotSize: 1 << 20}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("NewReceiver: %v; want ErrUnavailable", err)
	}
	t.Logf("reason: %v", err)
}

func TestInventory(t *testing.T) {
	requireDevice(t)
	inv, err := Inventory()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", inv)
	if !testbedenv.Active() {
		return // the rest describes the testbed's rxe0
	}
	var st *DeviceStatus
	for i := range inv {
		if inv[i].Name == "rxe0" && inv[i].Port == 1 {
			st = &inv[i]
		}
	}
	if st == nil {
		t.Fatalf("no rxe0 port 1 in %+v", inv)
	}
	ip := vmIP()
	if !st.Usable || st.Reason != "" || st.State != "PORT_ACTIVE" || st.LinkLayer != "Ethernet" || st.Netdev != "eth0" || st.ActiveMTU != 4096 {
		t.Errorf("rxe0: %+v; want usable, PORT_ACTIVE, Ethernet, eth0, MTU 4096", st)
	}
	var gidOK, addrOK bool
	for _, g := range st.GIDs {
		if g.Index == 1 && g.Addr == ip && g.Type == verbs.GIDTypeRoCEv2.String() {
			gidOK = true
		}
	}
	for _, p := range st.Addrs {
		if p.Addr() == ip {
			addrOK = true
		}
	}
	if !gidOK || !addrOK {
		t.Errorf("rxe0: GIDs %+v, addrs %v; want RoCE v2 GID index 1 = %v and that address on eth0", st.GIDs, st.Addrs, ip)
	}
	if err := Check(Options{Device: "rxe0", GIDIndex: 1}); err != nil {
		t.Errorf("Check(rxe0, GID 1): %v", err)
	}
	if err := Check(Options{Device: "nosuch0"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check(nosuch0): %v; want ErrUnavailable", err)
	}
	if err := Check(Options{Device: "rxe0", Port: 2}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check(rxe0 port 2): %v; want ErrUnavailable", err)
	}
}

// checkResources fails the test if rxe0's qp, mr, pd and cq counts are not
// back at their current values when the test ends.
func checkResources(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("rdma"); err != nil && !testbedenv.Active() {
		return
	}
	before := testbedenv.ResourceCounts(t, "rxe0")
	t.Cleanup(func() {
		after := testbedenv.ResourceCounts(t, "rxe0")
		for _, k := range []string{"qp", "mr", "pd", "cq"} {
			if after[k] != before[k] {
				t.Errorf("rdma resource %s: %d after the test, %d before", k, after[k], before[k])
			}
		}
	})
}

// testSink lands chunks in a file and records every call.
type testSink struct {
	f      *os.File
	mu     sync.Mutex
	landed map[uint32][]error
	admit  func(chunk.Chunk) error
	onLand func(chunk.Chunk, error)
}

func newTestSink(t *testing.T, dir string) *testSink {
	f, err := os.OpenFile(filepath.Join(dir, "dest"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &testSink{f: f, landed: map[uint32][]error{}}
}

func (s *testSink) File() *os.File { return s.f }

// landedFor returns the errors Landed got for chunk i so far.
func (s *testSink) landedFor(i uint32) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.landed[i])
}
func (s *testSink) Admit(c chunk.Chunk) (int64, error) {
	if s.admit != nil {
		return c.Offset, s.admit(c)
	}
	return c.Offset, nil
}
func (s *testSink) Landed(c chunk.Chunk, err error) {
	s.mu.Lock()
	s.landed[c.Index] = append(s.landed[c.Index], err)
	s.mu.Unlock()
	if s.onLand != nil {
		s.onLand(c, err)
	}
}

// sourceFile writes size pseudo-random bytes to a file and splits it into
// chunks with their CRCs.
func sourceFile(t *testing.T, dir string, size, chunkSize int, seed uint64) (*os.File, []byte, []chunk.Chunk) {
	t.Helper()
	data := make([]byte, size)
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	rand.NewChaCha8(key).Read(data)
	name := filepath.Join(dir, "src")
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var chunks []chunk.Chunk
	for off := 0; off < size; off += chunkSize {
		n := min(chunkSize, size-off)
		chunks = append(chunks, chunk.Chunk{Index: uint32(len(chunks)), Offset: int64(off), Length: uint32(n), CRC: crc32c.Checksum(data[off : off+n])})
	}
	return f, data, chunks
}

// pair is a connected sender and receiver on the same device.
type pair struct {
	s    *Sender
	r    *Receiver
	sink *testSink
	bufs []RemoteBuffer // the receiver's slots
}

func newPair(t *testing.T, slots, slotSize int) *pair {
	t.Helper()
	return connectPair(t, func(sinfo EndpointInfo, sink *testSink) (*Receiver, EndpointInfo, []RemoteBuffer, error) {
		return NewReceiver(Options{}, sinfo, ReceiverConfig{Sink: sink, Slots: slots, SlotSize: slotSize})
	}, nil, (*Sender).Connect)
}

// connectPair makes a sender, a receiver from newReceiver (closed, then
// afterClose run, at cleanup) and connects them with connect.
func connectPair(t *testing.T, newReceiver func(EndpointInfo, *testSink) (*Receiver, EndpointInfo, []RemoteBuffer, error),
	afterClose func() error, connect func(*Sender, EndpointInfo, []RemoteBuffer) error) *pair {
	t.Helper()
	checkGoroutines(t)
	s, sinfo, err := NewSender(Options{}, vmIP())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the sender: %v", err)
		}
	})
	sink := newTestSink(t, t.TempDir())
	r, rinfo, bufs, err := newReceiver(sinfo, sink)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("closing the receiver: %v", err)
		}
		if afterClose != nil {
			if err := afterClose(); err != nil {
				t.Errorf("after closing the receiver: %v", err)
			}
		}
	})
	if err := connect(s, rinfo, bufs); err != nil {
		t.Fatal(err)
	}
	return &pair{s: s, r: r, sink: sink, bufs: bufs}
}

// checkGoroutines fails the test if a goroutine of this package is still
// running when the test ends: Send waits for its own, Receiver.Close for
// the drain.
func checkGoroutines(t *testing.T) {
	t.Cleanup(func() {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			for _, fn := range []string{"rdma.(*Receiver).drain", "rdma.pollCQ", "rdma.(*doneQueue).run"} {
				if strings.Contains(g, fn) {
					t.Errorf("goroutine left running after Close:\n%s", g)
				}
			}
		}
	})
}

// sendResult is what runSend observed.
type sendResult struct {
	err     error
	verdict map[uint32][]error // done's errors per chunk, in order
	taken   int
	elapsed time.Duration
}

// runSend feeds chunks to Send; resend decides whether a failed chunk goes
// back on the channel. The channel closes once every chunk has a final
// verdict.
func runSend(t *testing.T, s *Sender, src Source, chunks []chunk.Chunk, depth int, resend func(chunk.Chunk, error) bool) sendResult {
	t.Helper()
	ch := make(chan chunk.Chunk, len(chunks)+1)
	res := sendResult{verdict: map[uint32][]error{}}
	var mu sync.Mutex
	remaining := len(chunks)
	for _, c := range chunks {
		ch <- c
	}
	if remaining == 0 {
		close(ch)
	}
	done := func(c chunk.Chunk, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.taken++
		res.verdict[c.Index] = append(res.verdict[c.Index], err)
		if err != nil && resend != nil && resend(c, err) {
			ch <- c
			return
		}
		if remaining--; remaining == 0 {
			close(ch)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	res.err = s.Send(ctx, src, ch, done, depth)
	res.elapsed = time.Since(start)
	return res
}

// checkEveryChunkOnce asserts that done and Landed saw every chunk exactly
// once, with no error.
func checkEveryChunkOnce(t *testing.T, p *pair, res sendResult, chunks []chunk.Chunk) {
	t.Helper()
	for _, c := range chunks {
		if v := res.verdict[c.Index]; len(v) != 1 || v[0] != nil {
			t.Errorf("chunk %d: done got %v; want one nil", c.Index, v)
		}
		if l := p.sink.landedFor(c.Index); len(l) != 1 || l[0] != nil {
			t.Errorf("chunk %d: Landed got %v; want one nil", c.Index, l)
		}
	}
}

func TestTransfer(t *testing.T) {
	requireDevice(t)
	const chunkSize = 1 << 20
	for _, size := range []int{0, 1, 4096, 1<<20 + 1, 64 << 20} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			checkResources(t)
			p := newPair(t, 8, chunkSize)
			src, data, chunks := sourceFile(t, t.TempDir(), size, chunkSize, uint64(size))
			res := runSend(t, p.s, Source{File: src}, chunks, 0, nil)
			if res.err != nil {
				t.Fatalf("Send: %v", res.err)
			}
			checkEveryChunkOnce(t, p, res, chunks)
			if res.taken != len(chunks) {
				t.Errorf("done called %d times for %d chunks", res.taken, len(chunks))
			}
			p.r.Close() // no Sink call after this
			got, err := os.ReadFile(p.sink.f.Name())
			if err != nil {
				t.Fatal(err)
			}
			if i := testbedenv.FirstDiff(got, data); i >= 0 {
				t.Fatalf("destination differs from source at byte %d (%d vs %d bytes)", i, len(got), len(data))
			}
			if size >= 64<<20 {
				t.Logf("moved and verified %d MiB in %d x 1 MiB chunks: %v, %.1f MB/s", size>>20, len(chunks),
					res.elapsed.Round(time.Millisecond), float64(size)/res.elapsed.Seconds()/1e6)
			}
		})
	}
}

// TestSourceModes measures the ways of giving WRITEs their bytes (pread
// into registered staging buffers, caller memory registered per Send: a
// memfd mapping, as for regions, or a mapping copied into the staging
// buffers, as for files)
// and two verification workers against the default (GOMAXPROCS/2),
// interleaved so the VM's drift hits them alike. RXFER_RDMA_ROUNDS sets the
// rounds (default 1).
func TestSourceModes(t *testing.T) {
	requireDevice(t)
	const size, chunkSize = 64 << 20, 1 << 20
	src, data, chunks := sourceFile(t, t.TempDir(), size, chunkSize, 7)
	rounds, _ := strconv.Atoi(os.Getenv("RXFER_RDMA_ROUNDS"))
	modes := []struct {
		name    string
		workers int
	}{{"staging", 0}, {"memory", 0}, {"mapping", 0}, {"staging-2workers", 2}}
	// The memory mode's source: the same bytes in a memfd mapping, with the
	// source's offset 0 at mem[0].
	_, mem := memfdWindow(t, size)
	copy(mem, data)
	rates := map[string][]float64{}
	for range max(rounds, 1) {
		for _, mode := range modes {
			t.Run(mode.name, func(t *testing.T) {
				checkResources(t)
				knobs.verifyWorkers = mode.workers
				defer func() { knobs.verifyWorkers = 0 }()
				p := newPair(t, 8, chunkSize)
				// The memory modes have no file: reading a nil file fails,
				// so their bytes can only come from mem.
				from := Source{File: src}
				switch mode.name {
				case "memory": // registered and written from
					from = Source{Bytes: mem, Register: true}
				case "mapping": // copied into the staging buffers
					from = Source{Bytes: mem}
				}
				res := runSend(t, p.s, from, chunks, 0, nil)
				if res.err != nil {
					t.Fatal(res.err)
				}
				p.r.Close()
				got, _ := os.ReadFile(p.sink.f.Name())
				if i := testbedenv.FirstDiff(got, data); i >= 0 {
					t.Fatalf("destination differs at byte %d", i)
				}
				rate := float64(size) / res.elapsed.Seconds() / 1e6
				rates[mode.name] = append(rates[mode.name], rate)
				t.Logf("%s: %d MiB in %v, %.1f MB/s", mode.name, size>>20, res.elapsed.Round(time.Millisecond), rate)
			})
		}
	}
	// What the receiver's verification alone costs here, for comparison.
	start := time.Now()
	crc32c.Checksum(data)
	t.Logf("RDMA-SOURCE-MODE crc32c alone: %.1f MB/s", float64(size)/time.Since(start).Seconds()/1e6)
	for _, mode := range modes {
		r := rates[mode.name]
		slices.Sort(r)
		if len(r) > 0 {
			t.Logf("RDMA-SOURCE-MODE %s: median %.1f MB/s of %v", mode.name, r[len(r)/2], r)
		}
	}
}

func TestChecksumMismatchIsReportedAndResent(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	const chunkSize = 1 << 20
	p := newPair(t, 4, chunkSize)
	src, data, chunks := sourceFile(t, t.TempDir(), 5*chunkSize+100, chunkSize, 3)
	var once sync.Once
	knobs.corrupt = func(c chunk.Chunk) (bad bool) {
		if c.Index == 2 {
			once.Do(func() { bad = true })
		}
		return bad
	}
	t.Cleanup(func() { knobs.corrupt = nil })
	res := runSend(t, p.s, Source{File: src}, chunks, 0, func(c chunk.Chunk, err error) bool {
		return errors.Is(err, chunk.ErrChecksum) && len(p.sink.landedFor(c.Index)) < 3
	})
	if res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	v := res.verdict[2]
	if len(v) != 2 || !errors.Is(v[0], chunk.ErrChecksum) || v[1] != nil {
		t.Errorf("chunk 2: done got %v; want ErrChecksum, then nil", v)
	}
	l := p.sink.landedFor(2)
	if len(l) != 2 || !errors.Is(l[0], chunk.ErrChecksum) || l[1] != nil {
		t.Errorf("chunk 2: Landed got %v; want ErrChecksum, then nil", l)
	}
	for _, c := range chunks {
		if c.Index != 2 && (len(res.verdict[c.Index]) != 1 || res.verdict[c.Index][0] != nil) {
			t.Errorf("chunk %d: done got %v", c.Index, res.verdict[c.Index])
		}
	}
	p.r.Close()
	got, _ := os.ReadFile(p.sink.f.Name())
	if i := testbedenv.FirstDiff(got, data); i >= 0 {
		t.Fatalf("destination differs at byte %d", i)
	}
}

func TestRejectedAndOversizedChunks(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	p := newPair(t, 2, 4096)
	p.sink.admit = func(c chunk.Chunk) error {
		if c.Index == 1 {
			return errors.New("out of bounds")
		}
		return nil
	}
	src, _, chunks := sourceFile(t, t.TempDir(), 3*4096, 4096, 5)
	chunks = append(chunks, chunk.Chunk{Index: 3, Offset: 0, Length: 8192})
	res := runSend(t, p.s, Source{File: src}, chunks, 0, nil)
	if res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	if v := res.verdict[1]; len(v) != 1 || !errors.Is(v[0], chunk.ErrRejected) {
		t.Errorf("chunk 1: done got %v; want chunk.ErrRejected", v)
	}
	if v := res.verdict[3]; len(v) != 1 || v[0] == nil || !strings.Contains(v[0].Error(), "exceeds") {
		t.Errorf("oversized chunk: done got %v; want a length error", v)
	}
	if v := res.verdict[2]; len(v) != 1 || v[0] != nil {
		t.Errorf("chunk 2: done got %v; want nil", v)
	}
}

func TestReceiverClosedMidTransfer(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	const chunkSize = 1 << 20
	p := newPair(t, 8, chunkSize)
	src, _, chunks := sourceFile(t, t.TempDir(), 64<<20, chunkSize, 9)
	landed := make(chan struct{}, len(chunks))
	p.sink.onLand = func(chunk.Chunk, error) { landed <- struct{}{} }
	closed := make(chan time.Time, 1)
	go func() {
		for range 4 {
			<-landed
		}
		p.r.Close()
		closed <- time.Now()
	}()
	res := runSend(t, p.s, Source{File: src}, chunks, 0, nil)
	end := time.Now()
	t.Logf("Send: %v", res.err)
	var ce *verbs.CompletionError
	if !errors.As(res.err, &ce) || !errors.Is(res.err, ErrBroken) ||
		(ce.Status != verbs.WCRemAccessErr && ce.Status != verbs.WCRetryExcErr && ce.Status != verbs.WCRemOpErr) {
		t.Fatalf("Send: %v; want ErrBroken with REM_ACCESS_ERR or RETRY_EXC_ERR", res.err)
	}
	if !strings.Contains(res.err.Error(), ce.Status.String()) {
		t.Errorf("error %q does not name %v", res.err, ce.Status)
	}
	// How fast is not asserted (a loaded host decides that): the verdict
	// above is a completion error, so the fabric (a WRITE or the liveness
	// probe, with finite retries) reported the vanished receiver.
	t.Logf("Send returned %v after the receiver closed", end.Sub(<-closed).Round(time.Millisecond))
	if res.taken != len(chunks) {
		t.Errorf("done called %d times; want once for each of %d chunks", res.taken, len(chunks))
	}
	ok, broken := 0, 0
	for _, c := range chunks {
		v := res.verdict[c.Index]
		switch {
		case len(v) != 1:
			t.Errorf("chunk %d: done got %v", c.Index, v)
		case v[0] == nil:
			ok++
		case errors.Is(v[0], ErrBroken):
			broken++
		default:
			t.Errorf("chunk %d: %v", c.Index, v[0])
		}
	}
	t.Logf("%d chunks verified, %d answered with the error", ok, broken)
	// The broken sender refuses more work with the same error.
	if err := runSend(t, p.s, Source{File: src}, chunks[:1], 0, nil).err; !errors.Is(err, ErrBroken) {
		t.Errorf("Send after the failure: %v; want ErrBroken", err)
	}
}

func TestSendCanceled(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	const chunkSize = 1 << 20
	p := newPair(t, 4, chunkSize)
	src, _, chunks := sourceFile(t, t.TempDir(), 32<<20, chunkSize, 11)
	ch := make(chan chunk.Chunk, len(chunks))
	for _, c := range chunks {
		ch <- c
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	answered := map[uint32]error{}
	done := func(c chunk.Chunk, err error) {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := answered[c.Index]; dup {
			t.Errorf("chunk %d answered twice", c.Index)
		}
		answered[c.Index] = err
		if len(answered) == 3 {
			cancel()
		}
	}
	err := p.s.Send(ctx, Source{File: src}, ch, done, 0)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Send: %v; want context.Canceled", err)
	}
	taken := len(chunks) - len(ch)
	mu.Lock()
	defer mu.Unlock()
	if len(answered) != taken {
		t.Errorf("%d chunks taken, %d answered", taken, len(answered))
	}
	t.Logf("%d chunks taken before the cancel took effect, %d left on the channel", taken, len(ch))
}

func TestCloseWithoutConnect(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	s, info, err := NewSender(Options{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if info.PSN > 0xffffff || info.QPN == 0 || info.MTU != 4096 && testbedenv.Active() {
		t.Errorf("endpoint %+v", info)
	}
	s2, info2, err := NewSender(Options{}, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if info2.PSN == info.PSN {
		t.Errorf("two senders got the same PSN %#x", info.PSN)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	s2.Close()
	r, _, _, err := NewReceiver(Options{}, EndpointInfo{QPN: 5, GID: netip.MustParseAddr("10.77.0.9").As16(), MTU: 1500}, ReceiverConfig{Sink: newTestSink(t, t.TempDir()), Slots: 2, SlotSize: 4096})
	if !errors.Is(err, ErrMismatch) {
		t.Errorf("NewReceiver with a peer MTU of 1500: %v, %v; want ErrMismatch", r, err)
	}
}

// mappedSink is a testSink whose destination is a mapping of another file
// than File: what lands there came through the mapping, not pwrite.
type mappedSink struct {
	*testSink
	mem []byte
}

func (s mappedSink) Mapping() ([]byte, int64) { return s.mem, 0 }

// A MappedSink gets its chunks copied into its mapping; a mapping that
// faults (its file shrank) fails the chunks with chunk.ErrReceiverIO instead of
// crashing the receiver.
func TestMappedSink(t *testing.T) {
	requireDevice(t)
	const chunkSize, size = 1 << 20, 4<<20 + 1
	dir := t.TempDir()
	mf, err := os.OpenFile(filepath.Join(dir, "mapped"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer mf.Close()
	if err := mf.Truncate(size); err != nil {
		t.Fatal(err)
	}
	mem, err := syscall.Mmap(int(mf.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	var sink *testSink
	p := connectPair(t, func(sinfo EndpointInfo, s *testSink) (*Receiver, EndpointInfo, []RemoteBuffer, error) {
		sink = s
		return NewReceiver(Options{}, sinfo, ReceiverConfig{Sink: mappedSink{s, mem}, Slots: 4, SlotSize: chunkSize})
	}, nil, (*Sender).Connect)
	src, data, chunks := sourceFile(t, dir, size, chunkSize, 7)
	if res := runSend(t, p.s, Source{File: src}, chunks, 0, nil); res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	got, err := os.ReadFile(mf.Name())
	if err != nil {
		t.Fatal(err)
	}
	if i := testbedenv.FirstDiff(got, data); i >= 0 {
		t.Fatalf("the mapped file differs from the source at byte %d", i)
	}
	if fi, _ := sink.File().Stat(); fi.Size() != 0 {
		t.Fatalf("File() got %d bytes: chunks went through pwrite, not the mapping", fi.Size())
	}
	// The mapped file shrinks under the receiver: every page of the mapping
	// now faults.
	if err := mf.Truncate(0); err != nil {
		t.Fatal(err)
	}
	res := runSend(t, p.s, Source{File: src}, chunks[:1], 0, nil)
	if v := res.verdict[0]; res.err != nil || len(v) != 1 || !errors.Is(v[0], chunk.ErrReceiverIO) {
		t.Fatalf("chunk into a faulting mapping: Send %v, verdicts %v; want one wrapping chunk.ErrReceiverIO", res.err, v)
	}
}
