package transfer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rxfer/rxfer/internal/crc32c"

	"github.com/rxfer/rxfer/internal/testbedenv"
	"github.com/rxfer/rxfer/rdma"
)

// needRDMA skips a test on a host where n cannot use RDMA and fails it in
// the testbed: a test that claims RDMA must not pass without it.
func needRDMA(t *testing.T, n *Node) {
	t.Helper()
	var probe error
	if r := n.Config().RDMAUnavailable; r != "" {
		probe = errors.New(r)
	}
	testbedenv.RequireRDMA(t, probe)
}

func TestPushOverRDMA(t *testing.T) {
	p := newPair(t, testKnobs{})
	needRDMA(t, p.src)
	for _, n := range []int{0, 1, 4096, 1<<20 + 1, 64 << 20} {
		want := writeRandom(t, filepath.Join(p.srcDir, "f"), n)
		info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "out", Overwrite: true, Policy: PolicyRDMA}, p.dst.LocalPeer(), nil)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if info.Transport != TransportRDMA || info.FallbackReason != "" {
			t.Fatalf("%d bytes went over %v (fallback reason %q), want RDMA", n, info.Transport, info.FallbackReason)
		}
		if got, _ := os.ReadFile(filepath.Join(p.dstDir, "out")); !bytes.Equal(got, want) || info.Result.CRC32C != crc32c.Checksum(want) {
			t.Fatalf("%d bytes: destination differs", n)
		}
	}
}

func TestRDMACorruptChunkIsResent(t *testing.T) {
	var corrupted atomic.Int32
	p := newPair(t, testKnobs{corruptChunk: func(i uint32, attempt int) bool {
		if i == 1 && attempt == 1 {
			corrupted.Add(1)
			return true
		}
		return false
	}})
	needRDMA(t, p.src)
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 4*64<<10)
	info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g", Policy: PolicyRDMA}, p.dst.LocalPeer(), nil)
	if err != nil || info.Transport != TransportRDMA || corrupted.Load() != 1 {
		t.Fatalf("err %v, transport %v, chunks corrupted %d (want 1)", err, info.Transport, corrupted.Load())
	}
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "g")); !bytes.Equal(got, want) {
		t.Fatal("destination differs after a resent chunk")
	}
}

// breakAfter breaks the source's queue pair once n chunks were verified.
func breakAfter(n int) testKnobs {
	var once sync.Once
	return testKnobs{breakRDMA: func(verified int) (brk bool) {
		if verified >= n {
			once.Do(func() { brk = true })
		}
		return brk
	}}
}

func TestRDMAFailsOverToTCP(t *testing.T) {
	p := newPair(t, breakAfter(40))
	needRDMA(t, p.src)
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 16<<20)
	info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g"}, p.dst.LocalPeer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Transport != TransportTCP || !strings.Contains(info.FallbackReason, "RDMA failed") {
		t.Fatalf("transport %v, fallback reason %q; want TCP after an RDMA failure", info.Transport, info.FallbackReason)
	}
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "g")); !bytes.Equal(got, want) {
		t.Fatal("destination differs after failover")
	}
	t.Logf("fallback reason: %s", info.FallbackReason)
}

func TestRDMAPolicyFailsWithoutFailover(t *testing.T) {
	p := newPair(t, breakAfter(40))
	needRDMA(t, p.src)
	writeRandom(t, filepath.Join(p.srcDir, "f"), 16<<20)
	info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g", Policy: PolicyRDMA}, p.dst.LocalPeer(), nil)
	if err == nil || info.State != StateFailed {
		t.Fatalf("err %v, state %v; want a failure under the RDMA policy", err, info.State)
	}
	// Nothing at the final name; the verified chunks are kept for a resume.
	for _, name := range entries(t, p.dstDir) {
		if !strings.HasPrefix(name, partialMarker) {
			t.Fatalf("destination holds %s after a failed transfer, want only the kept partial file and its journal", name)
		}
	}
}

func TestRDMAConcurrentPushes(t *testing.T) {
	p := newPair(t, testKnobs{})
	needRDMA(t, p.src)
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	infos := make([]Info, n)
	want := make([][]byte, n)
	for i := range n {
		want[i] = writeRandom(t, filepath.Join(p.srcDir, "c"+string(rune('a'+i))), 1<<20+i)
	}
	for i := range n {
		wg.Go(func() {
			name := "c" + string(rune('a'+i))
			infos[i], errs[i] = p.src.Push(context.Background(), PushRequest{SourcePath: name, DestPath: name, Policy: PolicyRDMA}, p.dst.LocalPeer(), nil)
		})
	}
	wg.Wait()
	for i := range n {
		name := "c" + string(rune('a'+i))
		got, _ := os.ReadFile(filepath.Join(p.dstDir, name))
		if errs[i] != nil || infos[i].Transport != TransportRDMA || !bytes.Equal(got, want[i]) {
			t.Errorf("%s: err %v, transport %v, equal %v", name, errs[i], infos[i].Transport, bytes.Equal(got, want[i]))
		}
	}
}

// On a host without RDMA: the RDMA policy fails with the reason, AUTO uses TCP and says why.
func TestPolicyWithoutRDMA(t *testing.T) {
	p := newPair(t, testKnobs{})
	if p.src.Config().RDMAUnavailable == "" {
		t.Skip("this host has RDMA; the policy-without-RDMA case runs on the host suite")
	}
	writeRandom(t, filepath.Join(p.srcDir, "f"), 1000)
	_, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g", Policy: PolicyRDMA}, p.dst.LocalPeer(), nil)
	if !errors.Is(err, ErrTransportUnavailable) || !strings.Contains(err.Error(), p.src.Config().RDMAUnavailable) {
		t.Fatalf("RDMA policy without a device: %v; want ErrTransportUnavailable with the reason", err)
	}
	policyErr := err
	info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g"}, p.dst.LocalPeer(), nil)
	if err != nil || info.Transport != TransportTCP || info.FallbackReason == "" {
		t.Fatalf("AUTO without a device: err %v, transport %v, reason %q", err, info.Transport, info.FallbackReason)
	}
	t.Logf("AUTO fell back: %s", info.FallbackReason)
	// Each layer says its context once: the reason is why, not another "rdma: unavailable:" label.
	for _, msg := range []string{p.src.Config().RDMAUnavailable, info.FallbackReason, policyErr.Error()} {
		if strings.Contains(msg, rdma.ErrUnavailable.Error()) {
			t.Errorf("reason repeats the unavailable label: %q", msg)
		}
	}
}
