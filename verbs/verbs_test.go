package verbs_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/rxfer/rxfer/verbs"
)

// Tests that need a device run in the testbed VMs (make testbed), where the
// runner sets RXFER_TESTBED=1: there a missing device FAILS them. Elsewhere
// they skip with a message saying so.

// inTestbed reports whether a device must exist.
func inTestbed() bool { return os.Getenv("RXFER_TESTBED") == "1" }

// openDevice opens RXFER_RDMA_DEVICE (default: the first device) and closes
// it when the test ends.
func openDevice(t *testing.T) *verbs.Context {
	t.Helper()
	ctx, err := verbs.Open(os.Getenv("RXFER_RDMA_DEVICE"))
	if err != nil {
		if inTestbed() {
			t.Fatalf("testbed: no usable RDMA device: %v", err)
		}
		t.Skipf("no RDMA device on this host (%v); RDMA tests run in the testbed VM: make testbed", err)
	}
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

// firstDiff returns the first index where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
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
	if inTestbed() {
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
	if inTestbed() && ctx.Name() != "rxe0" {
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
	if inTestbed() && g1.Netdev != "eth0" {
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
