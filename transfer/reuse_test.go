package transfer

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rxfer/rxfer/internal/crc32c"

	"github.com/rxfer/rxfer/internal/testbedenv"
	"github.com/rxfer/rxfer/rdma"
)

// rxeDevice is the testbed's RDMA device.
const rxeDevice = "rxe0"

// qpConn is what the source's RDMAConnected hook saw for one transfer.
type qpConn struct {
	local, remote uint32
	reused        bool
}

// oneLane configures a pair for one RDMA lane per transfer, so that a
// transfer's connection is one queue pair on each side.
func oneLane(c *Config) { c.RDMA.Lanes = 1 }

func connHook(ch chan<- qpConn) testKnobs {
	return testKnobs{rdmaConnected: func(l, r uint32, reused bool) { ch <- qpConn{l, r, reused} }}
}

// pushVerified pushes n random bytes over RDMA to name and checks the copy;
// it returns the connection the transfer used.
func pushVerified(t *testing.T, p *pair, conns <-chan qpConn, name string, n int) qpConn {
	t.Helper()
	want := writeRandom(t, filepath.Join(p.srcDir, name), n)
	info, err := p.src.Push(context.Background(), PushRequest{SourcePath: name, DestPath: name, Policy: PolicyRDMA}, p.dst.LocalPeer(), nil)
	if err != nil {
		t.Fatalf("push %s: %v", name, err)
	}
	if info.Transport != TransportRDMA || info.State != StateCommitted {
		t.Fatalf("push %s: transport %v, state %v", name, info.Transport, info.State)
	}
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, name)); !bytes.Equal(got, want) || info.Result.CRC32C != crc32c.Checksum(want) {
		t.Fatalf("push %s: destination differs", name)
	}
	select {
	case c := <-conns:
		return c
	default:
		t.Fatalf("push %s: no RDMA connection reported", name)
		return qpConn{}
	}
}

func wantIdle(t *testing.T, p *pair, srcSenders, dstEndpoints int) {
	t.Helper()
	s, e := p.src.IdleRDMA()
	s2, e2 := p.dst.IdleRDMA()
	if s != srcSenders || e != 0 || s2 != 0 || e2 != dstEndpoints {
		t.Fatalf("parked: source %d senders %d endpoints, destination %d senders %d endpoints; want %d senders on the source, %d endpoints on the destination",
			s, e, s2, e2, srcSenders, dstEndpoints)
	}
}

func countsLine(c map[string]int) string {
	var out string
	for _, k := range []string{"pd", "cq", "qp", "mr"} {
		out += fmt.Sprintf("%s %d ", k, c[k])
	}
	return out
}

// Two pushes between the same nodes run over the same pair of queue pairs;
// between them only the QPs and their own buffers stay registered.
func TestRDMAReuseConnection(t *testing.T) {
	conns := make(chan qpConn, 4)
	p := newPair(t, connHook(conns), oneLane)
	needRDMA(t, p.src)
	base := testbedenv.ResourceCounts(t, rxeDevice)
	c1 := pushVerified(t, p, conns, "a", 64<<10)
	parked := testbedenv.ResourceCounts(t, rxeDevice)
	wantIdle(t, p, 1, 1)
	c2 := pushVerified(t, p, conns, "b", 3<<20+5)
	after := testbedenv.ResourceCounts(t, rxeDevice)
	wantIdle(t, p, 1, 1)
	t.Logf("idle nodes: %s; parked after push 1: %s; after push 2: %s", countsLine(base), countsLine(parked), countsLine(after))
	t.Logf("push 1: %+v, push 2: %+v", c1, c2)
	if c1.reused || !c2.reused || c2.local != c1.local || c2.remote != c1.remote {
		t.Errorf("push 1 %+v, push 2 %+v: want push 2 to reuse push 1's queue pairs", c1, c2)
	}
	if after["qp"] != parked["qp"] || after["mr"] != parked["mr"] || after["pd"] != parked["pd"] || after["cq"] != parked["cq"] {
		t.Errorf("resources grew across a reused transfer: parked %s, after %s", countsLine(parked), countsLine(after))
	}
	// Parked: two QPs (one per side); MRs: the sender's control and staging
	// buffers and the receiver's control buffers, no slot.
	if parked["qp"]-base["qp"] != 2 || parked["mr"]-base["mr"] != 3 {
		t.Errorf("parked connection holds %d QPs and %d MRs beyond the idle nodes, want 2 and 3 (no receive slot)",
			parked["qp"]-base["qp"], parked["mr"]-base["mr"])
	}
	p.src.DropIdleRDMA()
	p.dst.DropIdleRDMA()
	if end := testbedenv.ResourceCounts(t, rxeDevice); countsLine(end) != countsLine(base) {
		t.Errorf("after dropping the parked connection: %s, want the idle nodes' %s", countsLine(end), countsLine(base))
	}
}

// A transfer stripes its chunks over two lanes, each a queue pair of its
// own landing chunks in the destination window; both are parked at the
// commit and both carry the next transfer.
func TestRDMALanes(t *testing.T) {
	conns := make(chan qpConn, 8)
	p := newPair(t, connHook(conns), func(c *Config) { c.RDMA.Lanes = 2 })
	needRDMA(t, p.src)
	base := testbedenv.ResourceCounts(t, rxeDevice)
	const size = 16<<20 + 1 // 257 chunks of 64 KiB: long enough for both lanes to get going
	for _, n := range []*Node{p.src, p.dst} {
		if _, err := n.RegisterRegion("r", size, ""); err != nil {
			t.Fatal(err)
		}
	}
	data := writeRandom(t, filepath.Join(p.srcDir, "f"), size)
	fillRegion(t, p.src, "r", data, 0)
	push := func(round int) [2]qpConn {
		fillRegion(t, p.dst, "r", make([]byte, size), 0)
		info, err := p.src.Push(context.Background(), PushRequest{Policy: PolicyRDMA,
			SourceRegion: &RegionRef{Name: "r"}, DestRegion: &RegionRef{Name: "r"}}, p.dst.LocalPeer(), nil)
		if err != nil || info.Transport != TransportRDMA {
			t.Fatalf("push %d: err %v, transport %v", round, err, info.Transport)
		}
		if got := regionBytes(t, p.dst, "r", 0, size); !bytes.Equal(got, data) {
			t.Fatalf("push %d: destination region differs", round)
		}
		rec, err := p.dst.incomingRecord(info.ID)
		if err != nil {
			t.Fatal(err)
		}
		rec.mu.Lock()
		in := rec.in
		rec.mu.Unlock()
		var landed []int64
		for _, r := range in.rdma {
			landed = append(landed, r.InPlace())
		}
		t.Logf("push %d: chunks per lane %v", round, landed)
		if len(landed) != 2 || landed[0] == 0 || landed[1] == 0 || landed[0]+landed[1] != 257 {
			t.Fatalf("push %d: chunks landed per lane %v, want 257 over two lanes, each carrying some", round, landed)
		}
		var c [2]qpConn
		for i := range c {
			select {
			case c[i] = <-conns:
			default:
				t.Fatalf("push %d: %d lanes connected, want 2", round, i)
			}
		}
		if c[0].local == c[1].local || c[0].remote == c[1].remote {
			t.Fatalf("push %d: lanes %+v share a queue pair", round, c)
		}
		return c
	}
	first := push(1)
	parked := testbedenv.ResourceCounts(t, rxeDevice)
	wantIdle(t, p, 2, 2)
	second := push(2)
	wantIdle(t, p, 2, 2)
	for i, c := range second {
		if !c.reused || !slices.Contains(first[:], qpConn{c.local, c.remote, false}) {
			t.Errorf("push 2 lane %d %+v: want one of push 1's lanes %+v, reused", i, c, first)
		}
	}
	if after := testbedenv.ResourceCounts(t, rxeDevice); countsLine(after) != countsLine(parked) {
		t.Errorf("resources changed across a reused transfer: parked %s, after %s", countsLine(parked), countsLine(after))
	}
	if parked["qp"]-base["qp"] != 4 {
		t.Errorf("two parked lanes hold %d QPs beyond the idle nodes, want 4", parked["qp"]-base["qp"])
	}
}

// A parked sender whose peer endpoint is gone (expired, daemon restarted)
// gets a fresh endpoint from the destination and reconnects to it.
func TestRDMAReuseFallsBackWhenPeerClosed(t *testing.T) {
	conns := make(chan qpConn, 4)
	p := newPair(t, connHook(conns), oneLane)
	needRDMA(t, p.src)
	base := testbedenv.ResourceCounts(t, rxeDevice)
	c1 := pushVerified(t, p, conns, "a", 64<<10)
	if n := p.dst.DropIdleRDMA(); n != 1 {
		t.Fatalf("destination dropped %d parked endpoints, want 1", n)
	}
	c2 := pushVerified(t, p, conns, "b", 1<<20+3)
	t.Logf("push 1: %+v, push 2 (destination's endpoint closed): %+v", c1, c2)
	if c2.reused || c2.remote == c1.remote {
		t.Errorf("push 2 %+v after the destination closed QP %#x: want a fresh destination QP", c2, c1.remote)
	}
	wantIdle(t, p, 1, 1)
	c3 := pushVerified(t, p, conns, "c", 64<<10)
	if !c3.reused || c3.remote != c2.remote || c3.local != c2.local {
		t.Errorf("push 3 %+v: want the connection of push 2 %+v reused", c3, c2)
	}
	// The same with the source's side gone: the destination's stale
	// endpoint is not used, and is closed when the source offers afresh.
	p.src.DropIdleRDMA()
	c4 := pushVerified(t, p, conns, "d", 64<<10)
	if c4.reused || c4.local == c3.local {
		t.Errorf("push 4 %+v after the source closed its QP %#x: want fresh QPs", c4, c3.local)
	}
	wantIdle(t, p, 1, 2) // push 3's destination endpoint waits for its expiry
	p.src.DropIdleRDMA()
	p.dst.DropIdleRDMA()
	if end := testbedenv.ResourceCounts(t, rxeDevice); countsLine(end) != countsLine(base) {
		t.Errorf("after dropping the parked connections: %s, want the idle nodes' %s", countsLine(end), countsLine(base))
	}
}

// Parked queue pairs are closed when they expire.
func TestRDMAIdleExpiry(t *testing.T) {
	conns := make(chan qpConn, 4)
	type closed struct {
		outgoing bool
		qpn      uint32
	}
	expired := make(chan closed, 4)
	hook := func(out bool, qpn uint32) { expired <- closed{out, qpn} }
	hooks := connHook(conns)
	hooks.idleRDMAClosed = hook
	p := newPair(t, hooks, oneLane, func(c *Config) {
		c.RDMA.IdleExpiry = 300 * time.Millisecond
	})
	needRDMA(t, p.src)
	base := testbedenv.ResourceCounts(t, rxeDevice)
	c := pushVerified(t, p, conns, "a", 64<<10)
	var got []closed
	timeout := time.After(30 * time.Second)
	for len(got) < 2 {
		select {
		case e := <-expired:
			got = append(got, e)
		case <-timeout:
			t.Fatalf("parked queue pairs not closed within 30 s of a 300 ms expiry (closed: %+v)", got)
		}
	}
	slices.SortFunc(got, func(a, b closed) int {
		if a.outgoing {
			return -1
		}
		if b.outgoing {
			return 1
		}
		return 0
	})
	if got[0] != (closed{true, c.local}) || got[1] != (closed{false, c.remote}) {
		t.Errorf("expired %+v, want the source's QP %#x and the destination's %#x", got, c.local, c.remote)
	}
	wantIdle(t, p, 0, 0)
	if end := testbedenv.ResourceCounts(t, rxeDevice); countsLine(end) != countsLine(base) {
		t.Errorf("after expiry: %s, want the idle nodes' %s", countsLine(end), countsLine(base))
	}
	// The next push sets up a fresh connection.
	if c2 := pushVerified(t, p, conns, "b", 64<<10); c2.reused {
		t.Errorf("push after expiry reused a connection: %+v", c2)
	}
}

// Failed transfers are never parked.
func TestRDMAFailedNotParked(t *testing.T) {
	p := newPair(t, testKnobs{breakRDMA: func(verified int) bool { return verified == 4 }}) // every push
	needRDMA(t, p.src)
	writeRandom(t, filepath.Join(p.srcDir, "f"), 4<<20)
	if _, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g", Policy: PolicyRDMA}, p.dst.LocalPeer(), nil); err == nil {
		t.Fatal("push with a broken QP succeeded under the RDMA policy")
	}
	wantIdle(t, p, 0, 0)
	info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "h"}, p.dst.LocalPeer(), nil)
	if err != nil || info.Transport != TransportTCP || !strings.Contains(info.FallbackReason, "RDMA failed") {
		t.Fatalf("failover push: err %v, transport %v", err, info.Transport)
	}
	wantIdle(t, p, 0, 0) // it failed over to TCP: nothing kept
}

// Per-transfer latency of a small RDMA copy with and without reuse, in the
// same run (a measurement, not a timed assertion).
func TestRDMAReuseLatency(t *testing.T) {
	reuse := newPair(t, testKnobs{})
	fresh := newPair(t, testKnobs{}, func(c *Config) { c.RDMA.IdleExpiry = -1 })
	needRDMA(t, reuse.src)
	const rounds = 15
	size := 64 << 10
	writeRandom(t, filepath.Join(reuse.srcDir, "s"), size)
	writeRandom(t, filepath.Join(fresh.srcDir, "s"), size)
	one := func(p *pair) time.Duration {
		start := time.Now()
		info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "s", DestPath: "s", Overwrite: true, Policy: PolicyRDMA}, p.dst.LocalPeer(), nil)
		if err != nil || info.Transport != TransportRDMA {
			t.Fatalf("push: %v (transport %v)", err, info.Transport)
		}
		return time.Since(start)
	}
	one(reuse) // parks the connection
	one(fresh)
	var withReuse, without []time.Duration
	for range rounds {
		withReuse = append(withReuse, one(reuse))
		without = append(without, one(fresh))
	}
	med := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	r, f := med(withReuse), med(without)
	t.Logf("RXFER-REUSE-LATENCY 64KiB RDMA push, median of %d: reused connection %v, fresh queue pairs %v (%.2fx)", rounds, r, f, float64(f)/float64(r))
	if s, _ := fresh.src.IdleRDMA(); s != 0 {
		t.Errorf("reuse disabled but %d senders parked", s)
	}
}

// A transfer uses the smaller of both ends' lane counts: the source's
// untaken queue pair is closed, not parked, and the next push reuses the
// one lane.
func TestRDMALanesFewerAtDestination(t *testing.T) {
	conns := make(chan qpConn, 4)
	p := newPair(t, connHook(conns))
	needRDMA(t, p.src)
	p.src.cfg.RDMA.Lanes, p.dst.cfg.RDMA.Lanes = 2, 1
	base := testbedenv.ResourceCounts(t, rxeDevice)
	c1 := pushVerified(t, p, conns, "a", 1<<20+3)
	wantIdle(t, p, 1, 1)
	c2 := pushVerified(t, p, conns, "b", 64<<10)
	if len(conns) != 0 || !c2.reused || c2.local != c1.local {
		t.Errorf("push 1 %+v, push 2 %+v (%d more connections): want one lane each, the second reusing the first", c1, c2, len(conns))
	}
	wantIdle(t, p, 1, 1)
	p.src.DropIdleRDMA()
	p.dst.DropIdleRDMA()
	if end := testbedenv.ResourceCounts(t, rxeDevice); countsLine(end) != countsLine(base) {
		t.Errorf("after dropping the parked connection: %s, want the idle nodes' %s (the untaken lane must be closed)", countsLine(end), countsLine(base))
	}
}

// A destination registers no more slot memory than the transfer needs: as
// many slots as chunks (up to its share), none larger than the file.
func TestRDMASlotsFitTheTransfer(t *testing.T) {
	p := newPair(t, testKnobs{})
	needRDMA(t, p.dst)
	for _, tc := range []struct {
		size              int64
		wantSlots, wantSz int
	}{
		{100, 1, 100},                          // one short chunk
		{3 * 64 << 10, 3, 64 << 10},            // three chunks
		{64 << 20, DefaultRDMASlots, 64 << 10}, // the node's slots
	} {
		s, offer, err := rdma.NewSender(rdma.Options{GIDIndex: rdma.AutoGID}, netip.Addr{})
		if err != nil {
			t.Fatal(err)
		}
		id := NewID()
		resp, err := p.dst.Prepare(context.Background(), PrepareRequest{ID: id, SourceNode: "src", SourcePath: "/f", DestPath: "/slots",
			Size: tc.size, ChunkSize: 64 << 10, Overwrite: true, Policy: PolicyRDMA, RDMA: []RDMAEndpoint{offer}})
		s.Close()
		if err != nil {
			t.Fatalf("%d bytes: Prepare: %v", tc.size, err)
		}
		p.dst.Abort(context.Background(), id, "test", true)
		if len(resp.RDMA) != 1 || len(resp.RDMA[0].Slots) != tc.wantSlots || int(resp.RDMA[0].Slots[0].Len) != tc.wantSz {
			t.Errorf("%d bytes in 64 KiB chunks: channels %+v, want one with %d slots of %d bytes", tc.size, resp.RDMA, tc.wantSlots, tc.wantSz)
		}
	}
}
