package verbs_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/rxfer/rxfer/internal/testbedenv"
	"github.com/rxfer/rxfer/verbs"
)

// openDevice opens RXFER_RDMA_DEVICE (default: the first device) and closes
// it when the test ends. Without a device the test skips on a host and fails
// in the testbed (testbedenv.RequireRDMA).
func openDevice(t *testing.T) *verbs.Context {
	t.Helper()
	ctx, err := verbs.Open(os.Getenv("RXFER_RDMA_DEVICE"))
	testbedenv.RequireRDMA(t, err)
	t.Cleanup(func() {
		if err := ctx.Close(); err != nil {
			t.Errorf("closing the device: %v", err)
		}
	})
	return ctx
}

// closeAtEnd closes c when the test ends and reports a failure to close.
func closeAtEnd(t *testing.T, what string, c interface{ Close() error }) {
	t.Helper()
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("closing %s: %v", what, err)
		}
	})
}

// roceV2Index returns the index of the port's IPv4-mapped RoCE v2 GID.
func roceV2Index(t *testing.T, ctx *verbs.Context) int {
	t.Helper()
	table, err := ctx.GIDTable(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range table {
		if e.Type == verbs.GIDTypeRoCEv2 && e.GID.IP().To4() != nil {
			return e.Index
		}
	}
	t.Fatalf("no IPv4-mapped RoCE v2 GID on %s port 1: %+v", ctx.Name(), table)
	return -1
}

// fill writes a deterministic pseudo-random pattern for seed into b.
func fill(b []byte, seed uint64) {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	rand.NewChaCha8(key).Read(b)
}

// waitCompletions waits for n completions on cq (event mode) and returns
// them; an error completion is returned as the error.
func waitCompletions(t *testing.T, cq *verbs.CompletionQueue, n int) ([]verbs.WorkCompletion, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out []verbs.WorkCompletion
	wcs := make([]verbs.WorkCompletion, 16)
	for len(out) < n {
		got, err := cq.Wait(ctx, wcs)
		if err != nil {
			return out, err
		}
		for _, wc := range wcs[:got] {
			if err := wc.Err(); err != nil {
				return out, err
			}
			out = append(out, wc)
		}
	}
	return out, nil
}

func TestHostReportsNoDevice(t *testing.T) {
	if testbedenv.Active() {
		t.Skip("host-only test: the testbed has a device")
	}
	devs, err := verbs.Devices()
	if err == nil {
		t.Skipf("this host has RDMA devices (%v): nothing to check", devs)
	}
	want := verbs.ErrNoDevice
	if errors.Is(err, verbs.ErrNotSupported) {
		want = verbs.ErrNotSupported // built without cgo
	}
	if !errors.Is(err, want) {
		t.Fatalf("Devices() = %v; want an error wrapping %v", err, want)
	}
	var ve *verbs.Error
	if !errors.As(err, &ve) || ve.Op == "" {
		t.Fatalf("Devices() error %v is not a *verbs.Error naming the call", err)
	}
	if _, err := verbs.Open(""); !errors.Is(err, want) {
		t.Fatalf("Open(\"\") = %v; want an error wrapping %v", err, want)
	}
	if _, err := verbs.Open("rxe0"); !errors.Is(err, want) {
		t.Fatalf("Open(\"rxe0\") = %v; want an error wrapping %v", err, want)
	}
	t.Logf("as expected: %v", err)
}

func TestDeviceAndPort(t *testing.T) {
	ctx := openDevice(t)
	devs, err := verbs.Devices()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("devices: %+v", devs)
	if testbedenv.Active() && ctx.Name() != "rxe0" {
		t.Errorf("opened %q; the testbed's device is rxe0", ctx.Name())
	}
	found := false
	for _, d := range devs {
		if d.Name == ctx.Name() {
			found = true
			if d.GUID == 0 || d.Transport != verbs.TransportIB {
				t.Errorf("device %+v: want a non-zero GUID and transport InfiniBand", d)
			}
		}
	}
	if !found {
		t.Errorf("Devices() does not list the opened device %q", ctx.Name())
	}
	da, err := ctx.QueryDevice()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("device attributes: %+v", da)
	if da.MaxQP <= 0 || da.MaxCQE <= 0 || da.MaxMRSize == 0 || da.PhysPortCount < 1 {
		t.Errorf("implausible limits: %+v", da)
	}
	pa, err := ctx.QueryPort(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("port 1: %+v (active MTU %v)", pa, pa.ActiveMTU)
	if pa.State != verbs.PortActive {
		t.Errorf("port 1 state = %v; want PORT_ACTIVE", pa.State)
	}
	if pa.LinkLayer != verbs.LinkLayerEthernet {
		t.Errorf("link layer = %v; want Ethernet (RoCE)", pa.LinkLayer)
	}
	if pa.ActiveMTU.Bytes() < 1024 {
		t.Errorf("active MTU = %v", pa.ActiveMTU)
	}
	if _, err := ctx.QueryPort(9); err == nil {
		t.Errorf("QueryPort(9) succeeded on a one-port device")
	}
}

func TestGIDTable(t *testing.T) {
	ctx := openDevice(t)
	table, err := ctx.GIDTable(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range table {
		t.Logf("GID %d: %v %v %s", e.Index, e.GID, e.Type, e.Netdev)
	}
	byIndex := map[int]verbs.GIDEntry{}
	for _, e := range table {
		byIndex[e.Index] = e
	}
	g0, ok := byIndex[0]
	if !ok || !g0.GID.IP().IsLinkLocalUnicast() {
		t.Errorf("GID index 0 = %+v; want the fe80:: link-local GID", g0)
	}
	g1, ok := byIndex[1]
	if !ok {
		t.Fatalf("no GID at index 1")
	}
	if g1.Type != verbs.GIDTypeRoCEv2 || g1.GID.IP().To4() == nil {
		t.Errorf("GID index 1 = %v %v; want an IPv4-mapped RoCE v2 GID", g1.GID, g1.Type)
	}
	if ip := os.Getenv("RXFER_VM_IP"); ip != "" && g1.GID.IP().String() != ip {
		t.Errorf("GID index 1 = %v; want the VM's address %s", g1.GID, ip)
	}
	if testbedenv.Active() && g1.Netdev != "eth0" {
		t.Errorf("GID index 1 netdev = %q; want eth0", g1.Netdev)
	}
}

func TestCompletionQueueWaitSleeps(t *testing.T) {
	ctx := openDevice(t)
	cq, err := ctx.CreateCQ(16)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "CQ", cq)
	before := cpuTime(t)
	start := time.Now()
	wctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	n, err := cq.Wait(wctx, make([]verbs.WorkCompletion, 4))
	elapsed := time.Since(start)
	if n != 0 || !errors.Is(err, verbs.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait on an idle CQ = %d, %v; want 0 and ErrTimeout", n, err)
	}
	used := cpuTime(t) - before
	t.Logf("idle Wait: %v elapsed, %v CPU", elapsed, used)
	if elapsed < 400*time.Millisecond {
		t.Errorf("Wait returned after %v, before its deadline", elapsed)
	}
	if used > elapsed/4 {
		t.Errorf("idle Wait used %v of CPU in %v: it should sleep, not spin", used, elapsed)
	}
	// A second Wait after an expired one works normally.
	wctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := cq.Wait(wctx2, make([]verbs.WorkCompletion, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a canceled context = %v; want context.Canceled", err)
	}
}

func TestCloseIsIdempotentAndOrdered(t *testing.T) {
	ctx := openDevice(t)
	pd, err := ctx.AllocPD()
	if err != nil {
		t.Fatal(err)
	}
	mr, err := pd.AllocMemoryRegion(4096, verbs.AccessLocalWrite)
	if err != nil {
		t.Fatal(err)
	}
	// A PD with a live region cannot go: the error says so, nothing leaks.
	if err := pd.Close(); err == nil {
		t.Errorf("closing a PD with a registered region succeeded")
	} else {
		t.Logf("closing a busy PD: %v", err)
	}
	for range 2 {
		if err := mr.Close(); err != nil {
			t.Fatal(err)
		}
		if err := pd.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pd.AllocMemoryRegion(4096, 0); !errors.Is(err, verbs.ErrClosed) {
		t.Errorf("using a closed PD = %v; want ErrClosed", err)
	}
}

func TestBufferIsPageAligned(t *testing.T) {
	b, err := verbs.NewBuffer(10000)
	if errors.Is(err, verbs.ErrNotSupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	mem := b.Bytes()
	if len(mem) != 10000 || cap(mem)%os.Getpagesize() != 0 {
		t.Errorf("len %d cap %d; want 10000 and whole pages", len(mem), cap(mem))
	}
	if addr := uintptr(unsafe.Pointer(&mem[0])); addr%uintptr(os.Getpagesize()) != 0 {
		t.Errorf("buffer at %#x is not page-aligned", addr)
	}
	mem[9999] = 1 // writable
	for range 2 {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestErrorsNameTheStatusAndRequest(t *testing.T) {
	wc := verbs.WorkCompletion{WRID: 42, QPN: 0x11, Status: verbs.WCRemAccessErr, VendorErr: 0x81}
	err := wc.Err()
	if !errors.Is(err, verbs.WCRemAccessErr) || errors.Is(err, verbs.WCWRFlushErr) {
		t.Errorf("errors.Is on %v does not match its status only", err)
	}
	const want = "verbs: work request 0x2a on QP 0x11: REM_ACCESS_ERR (remote access error), vendor error 0x81"
	if err.Error() != want {
		t.Errorf("got %q; want %q", err, want)
	}
	if (&verbs.WorkCompletion{Status: verbs.WCSuccess}).Err() != nil {
		t.Errorf("a successful completion is an error")
	}
	for s, name := range map[verbs.WCStatus]string{verbs.WCSuccess: "SUCCESS", verbs.WCWRFlushErr: "WR_FLUSH_ERR",
		verbs.WCRetryExcErr: "RETRY_EXC_ERR", verbs.WCTMRndvIncomplete: "TM_RNDV_INCOMPLETE", 99: "WCStatus(99)"} {
		if s.String() != name {
			t.Errorf("%d.String() = %q; want %q", int(s), s, name)
		}
	}
	e := &verbs.Error{Op: "ibv_reg_mr", Device: "rxe0", Err: verbs.ErrClosed}
	if !errors.Is(e, verbs.ErrClosed) || e.Error() != "verbs: rxe0: ibv_reg_mr: verbs object already closed" {
		t.Errorf("Error: %q", e)
	}
	if got := (verbs.AccessLocalWrite | verbs.AccessRemoteWrite).String(); got != "LOCAL_WRITE|REMOTE_WRITE" {
		t.Errorf("AccessFlags.String() = %q", got)
	}
	if verbs.MTU4096.Bytes() != 4096 || verbs.MTU(9).Bytes() != 0 {
		t.Errorf("MTU.Bytes is wrong")
	}
}
