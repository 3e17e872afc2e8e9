package verbs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rxfer/rxfer/internal/testbedenv"
	"github.com/rxfer/rxfer/verbs"
)

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// side is one end of a loopback RC connection: its own PD, CQ and QP, as a
// separate process would have.
type side struct {
	pd *verbs.ProtectionDomain
	cq *verbs.CompletionQueue
	qp *verbs.QueuePair
}

func newSide(t testing.TB, ctx *verbs.Context) *side {
	t.Helper()
	s, err := openSide(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("closing: %v", err)
		}
	})
	return s
}

func openSide(ctx *verbs.Context) (s *side, err error) {
	s = &side{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.pd, err = ctx.AllocPD(); err != nil {
		return nil, err
	}
	if s.cq, err = ctx.CreateCQ(256); err != nil {
		return nil, err
	}
	s.qp, err = s.pd.CreateQP(verbs.QPConfig{SendCQ: s.cq, RecvCQ: s.cq, MaxSendWR: 128, MaxRecvWR: 128})
	return s, err
}

// close destroys child first; safe on a partly opened side.
func (s *side) close() error {
	var errs []error
	if s.qp != nil {
		errs = append(errs, s.qp.Close())
	}
	if s.cq != nil {
		errs = append(errs, s.cq.Close())
	}
	if s.pd != nil {
		errs = append(errs, s.pd.Close())
	}
	return errors.Join(errs...)
}

// connectPair connects a and b to each other through GID gidIndex, with
// PSNs derived from seed, as two processes would after exchanging PeerInfo.
func connectPair(ctx *verbs.Context, a, b *side, gidIndex int, seed uint32) error {
	ai, err := a.qp.LocalInfo(1, gidIndex, 0x1000+seed)
	if err != nil {
		return err
	}
	bi, err := b.qp.LocalInfo(1, gidIndex, 0x2000+seed)
	if err != nil {
		return err
	}
	access := verbs.AccessLocalWrite | verbs.AccessRemoteWrite
	if err := a.qp.Connect(verbs.ConnectConfig{GIDIndex: gidIndex, PSN: ai.PSN, Access: access}, bi); err != nil {
		return err
	}
	return b.qp.Connect(verbs.ConnectConfig{GIDIndex: gidIndex, PSN: bi.PSN, Access: access}, ai)
}

func TestLoopbackWrite64MiB(t *testing.T) {
	const total, chunk = 64 << 20, 1 << 20
	ctx := openDevice(t)
	gid := roceV2Index(t, ctx)
	a, b := newSide(t, ctx), newSide(t, ctx)
	if err := connectPair(ctx, a, b, gid, 1); err != nil {
		t.Fatal(err)
	}
	src, err := a.pd.AllocMemoryRegion(total, 0) // local read only: a source
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "source region", src)
	dst, err := b.pd.AllocMemoryRegion(total, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "destination region", dst)
	fill(src.Bytes(), 64)

	start := time.Now()
	posted, completed := 0, 0
	wcs := make([]verbs.WorkCompletion, 16)
	// Keep at most 32 WRITEs in flight, each signaled, wr_id = chunk slot.
	for completed < total/chunk {
		var wrs []verbs.SendWR
		for posted < total/chunk && posted-completed < 32 {
			off := posted * chunk
			wrs = append(wrs, verbs.SendWR{
				WRID: uint64(posted), Opcode: verbs.OpWrite, Local: src.SGE(off, chunk),
				RemoteAddr: dst.Addr() + uint64(off), RKey: dst.RKey(), Signaled: true,
			})
			posted++
		}
		if err := a.qp.PostSend(wrs...); err != nil {
			t.Fatal(err)
		}
		got, err := waitCompletions(t, a.cq, 1)
		if err != nil {
			t.Fatal(err)
		}
		completed += len(got)
		// Take whatever else is ready without sleeping.
		n, err := a.cq.Poll(wcs)
		if err != nil {
			t.Fatal(err)
		}
		for _, wc := range wcs[:n] {
			if err := wc.Err(); err != nil {
				t.Fatal(err)
			}
			if wc.Opcode != verbs.WCRDMAWrite {
				t.Fatalf("completion %+v: want RDMA_WRITE", wc)
			}
		}
		completed += n
	}
	elapsed := time.Since(start)
	if i := testbedenv.FirstDiff(src.Bytes(), dst.Bytes()); i >= 0 {
		t.Fatalf("destination differs from source at byte %d (chunk %d)", i, i/chunk)
	}
	t.Logf("wrote and verified %d MiB in %d x 1 MiB WRITEs: %v, %.1f MB/s",
		total>>20, total/chunk, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds()/1e6)
}

func TestWriteWithImmAndSend(t *testing.T) {
	ctx := openDevice(t)
	gid := roceV2Index(t, ctx)
	a, b := newSide(t, ctx), newSide(t, ctx)
	if err := connectPair(ctx, a, b, gid, 2); err != nil {
		t.Fatal(err)
	}
	src, err := a.pd.AllocMemoryRegion(8192, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "source region", src)
	dst, err := b.pd.AllocMemoryRegion(8192, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "destination region", dst)
	fill(src.Bytes(), 7)

	tests := []struct {
		name    string
		recv    verbs.RecvWR
		send    verbs.SendWR
		wantOp  verbs.WCOpcode
		wantLen uint32
		wantImm bool
		span    [2]int // bytes of dst that must equal src
	}{{
		name: "WRITE_WITH_IMM",
		recv: verbs.RecvWR{WRID: 100}, // no SGE: the data lands by WRITE
		send: verbs.SendWR{WRID: 1, Opcode: verbs.OpWriteWithImm, Local: src.SGE(0, 4096),
			RemoteAddr: dst.Addr(), RKey: dst.RKey(), Imm: 0xc0ffee01, Signaled: true},
		wantOp: verbs.WCRecvRDMAWithImm, wantLen: 4096, wantImm: true, span: [2]int{0, 4096},
	}, {
		name:   "SEND",
		recv:   verbs.RecvWR{WRID: 101, Local: dst.SGE(4096, 4096)},
		send:   verbs.SendWR{WRID: 2, Opcode: verbs.OpSend, Local: src.SGE(4096, 100), Signaled: true},
		wantOp: verbs.WCRecv, wantLen: 100, span: [2]int{4096, 4196},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := b.qp.PostRecv(tc.recv); err != nil {
				t.Fatal(err)
			}
			if err := a.qp.PostSend(tc.send); err != nil {
				t.Fatal(err)
			}
			if _, err := waitCompletions(t, a.cq, 1); err != nil {
				t.Fatal(err)
			}
			got, err := waitCompletions(t, b.cq, 1)
			if err != nil {
				t.Fatal(err)
			}
			wc := got[0]
			t.Logf("receive completion: %+v", wc)
			if wc.WRID != tc.recv.WRID || wc.Opcode != tc.wantOp || wc.ByteLen != tc.wantLen || wc.QPN != b.qp.QPN() {
				t.Errorf("completion %+v; want wr_id %d, %v, %d bytes, QP %#x", wc, tc.recv.WRID, tc.wantOp, tc.wantLen, b.qp.QPN())
			}
			if wc.HasImm != tc.wantImm || (tc.wantImm && wc.Imm != tc.send.Imm) {
				t.Errorf("immediate = %v %#x; want %v %#x", wc.HasImm, wc.Imm, tc.wantImm, tc.send.Imm)
			}
			lo, hi := tc.span[0], tc.span[1]
			if i := testbedenv.FirstDiff(src.Bytes()[lo:hi], dst.Bytes()[lo:hi]); i >= 0 {
				t.Errorf("payload differs at byte %d", lo+i)
			}
		})
	}
}

func TestWrongRKeyFailsAndRecovers(t *testing.T) {
	ctx := openDevice(t)
	gid := roceV2Index(t, ctx)
	a, b := newSide(t, ctx), newSide(t, ctx)
	if err := connectPair(ctx, a, b, gid, 3); err != nil {
		t.Fatal(err)
	}
	src, err := a.pd.AllocMemoryRegion(65536, 0)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "source region", src)
	dst, err := b.pd.AllocMemoryRegion(65536, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "destination region", dst)
	fill(src.Bytes(), 3)

	bad := verbs.SendWR{WRID: 7, Opcode: verbs.OpWrite, Local: src.SGE(0, 4096),
		RemoteAddr: dst.Addr(), RKey: dst.RKey() ^ 0x5a5a00, Signaled: true}
	if err := a.qp.PostSend(bad); err != nil {
		t.Fatal(err)
	}
	_, err = waitCompletions(t, a.cq, 1)
	var ce *verbs.CompletionError
	if !errors.As(err, &ce) || !errors.Is(err, verbs.WCRemAccessErr) {
		t.Fatalf("WRITE with a wrong rkey: %v; want a CompletionError with REM_ACCESS_ERR", err)
	}
	if ce.WRID != 7 || ce.QPN != a.qp.QPN() || !strings.Contains(err.Error(), "REM_ACCESS_ERR") ||
		!strings.Contains(err.Error(), "work request 0x7") {
		t.Errorf("error %q (%+v) should name REM_ACCESS_ERR, work request 7 and QP %#x", err, ce, a.qp.QPN())
	}
	t.Logf("reported: %v", err)
	if st, err := a.qp.State(); err != nil || st != verbs.QPStateError {
		t.Errorf("requester QP state after the error = %v, %v; want ERR", st, err)
	}
	// A request posted now is flushed, not executed.
	if err := a.qp.PostSend(verbs.SendWR{WRID: 8, Opcode: verbs.OpWrite, Local: src.SGE(0, 16),
		RemoteAddr: dst.Addr(), RKey: dst.RKey(), Signaled: true}); err == nil {
		if _, err := waitCompletions(t, a.cq, 1); !errors.Is(err, verbs.WCWRFlushErr) {
			t.Errorf("work request on a QP in error: %v; want WR_FLUSH_ERR", err)
		}
	}
	bst, _ := b.qp.State()
	t.Logf("responder QP state after the error: %v", bst)
	if st := string(dst.Bytes()[:4096]); strings.Trim(st, "\x00") != "" {
		t.Errorf("the failed WRITE changed the destination")
	}

	// Recover: reset both QPs to a known state and connect them again.
	for _, s := range []*side{a, b} {
		if err := s.qp.Reset(); err != nil {
			t.Fatal(err)
		}
		if st, err := s.qp.State(); err != nil || st != verbs.QPStateReset {
			t.Fatalf("state after Reset = %v, %v; want RESET", st, err)
		}
	}
	if err := connectPair(ctx, a, b, gid, 4); err != nil {
		t.Fatal(err)
	}
	good := bad
	good.WRID, good.RKey = 9, dst.RKey()
	if err := a.qp.PostSend(good); err != nil {
		t.Fatal(err)
	}
	if _, err := waitCompletions(t, a.cq, 1); err != nil {
		t.Fatalf("WRITE after reset and reconnect: %v", err)
	}
	if i := testbedenv.FirstDiff(src.Bytes()[:4096], dst.Bytes()[:4096]); i >= 0 {
		t.Fatalf("data differs at byte %d after recovery", i)
	}
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// leakCycle opens a device and does one full create/register/connect/destroy.
func leakCycle(dev string, gid int, i int) (err error) {
	ctx, err := verbs.Open(dev)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, ctx.Close()) }()
	a, err := openSide(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.close()) }()
	b, err := openSide(ctx)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.close()) }()
	mr, err := b.pd.AllocMemoryRegion(65536, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, mr.Close()) }()
	return connectPair(ctx, a, b, gid, uint32(i))
}

func TestNoLeaksOverCycles(t *testing.T) {
	ctx := openDevice(t)
	gid := roceV2Index(t, ctx)
	dev := ctx.Name()
	if _, err := exec.LookPath("rdma"); err != nil {
		testbedenv.RequireRDMA(t, fmt.Errorf("no rdma tool (iproute2) to count the device's resources: %w", err))
	}
	cycles := 1000
	if s := os.Getenv("RXFER_LEAK_CYCLES"); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	baseline, fds := testbedenv.ResourceCounts(t, dev), openFDs(t)
	t.Logf("baseline: %v, %d open fds", baseline, fds)
	start := time.Now()
	for i := range cycles {
		if err := leakCycle(dev, gid, i); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	after := testbedenv.ResourceCounts(t, dev)
	t.Logf("after %d cycles (%v, %v each): %v, %d open fds", cycles, elapsed.Round(time.Millisecond),
		(elapsed / time.Duration(max(cycles, 1))).Round(time.Microsecond), after, openFDs(t))
	if fmt.Sprint(after) != fmt.Sprint(baseline) {
		t.Errorf("resources leaked: %v before, %v after", baseline, after)
	}
	if n := openFDs(t); n != fds {
		t.Errorf("file descriptors leaked: %d before, %d after", fds, n)
	}
}

func TestWriteFromReadOnlyFileMapping(t *testing.T) {
	const size = 1 << 20
	ctx := openDevice(t)
	gid := roceV2Index(t, ctx)
	a, b := newSide(t, ctx), newSide(t, ctx)
	if err := connectPair(ctx, a, b, gid, 5); err != nil {
		t.Fatal(err)
	}
	// The source is a file mapped read-only, registered for local access
	// only, as the RDMA transport registers a file it sends.
	want := make([]byte, size)
	fill(want, 11)
	path := t.TempDir() + "/source"
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Measured on the testbed's 6.1 kernel: a read-only MAP_SHARED mapping
	// fails to register with EFAULT (the pin asks for forced write access,
	// which shared read-only mappings refuse); a MAP_PRIVATE one works. Only
	// log the shared case: newer kernels may accept it.
	if shared, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED); err == nil {
		mr, err := a.pd.RegisterMemory(shared, 0)
		t.Logf("registering a read-only MAP_SHARED file mapping: %v", err)
		if err == nil {
			mr.Close()
		}
		syscall.Munmap(shared)
	}
	mem, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) }) // after the region is closed (cleanups run last-in first-out)
	src, err := a.pd.RegisterMemory(mem, 0)
	if err != nil {
		t.Fatalf("registering a read-only MAP_PRIVATE file mapping with local access: %v", err)
	}
	closeAtEnd(t, "file region", src)
	if _, err := a.pd.RegisterMemory(mem, verbs.AccessLocalWrite); err == nil {
		t.Errorf("registering a read-only mapping for LOCAL_WRITE succeeded")
	}
	dst, err := b.pd.AllocMemoryRegion(size, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "destination region", dst)
	if err := a.qp.PostSend(verbs.SendWR{WRID: 0, Opcode: verbs.OpWrite, Local: src.SGE(0, size),
		RemoteAddr: dst.Addr(), RKey: dst.RKey(), Signaled: true}); err != nil {
		t.Fatal(err)
	}
	// Busy-poll mode this time.
	wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wcs := make([]verbs.WorkCompletion, 1)
	if _, err := a.cq.BusyWait(wctx, wcs); err != nil {
		t.Fatal(err)
	}
	if err := wcs[0].Err(); err != nil {
		t.Fatal(err)
	}
	if i := testbedenv.FirstDiff(want, dst.Bytes()); i >= 0 {
		t.Fatalf("data differs at byte %d", i)
	}
}
