package rdma

import (
	"os"
	"testing"
	"unsafe"

	"github.com/rxfer/rxfer/internal/testbedenv"
	"github.com/rxfer/rxfer/verbs"
)

// sendAll sends a fresh file through p's sender into sink and checks it
// landed intact.
func sendAll(t *testing.T, s *Sender, sink *testSink, size, chunkSize int, seed uint64) {
	t.Helper()
	src, data, chunks := sourceFile(t, t.TempDir(), size, chunkSize, seed)
	if res := runSend(t, s, Source{File: src}, chunks, 0, nil); res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	got, err := os.ReadFile(sink.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if i := testbedenv.FirstDiff(got[:len(data)], data); i >= 0 {
		t.Fatalf("destination differs from source at byte %d", i)
	}
}

// A parked connection carries a second transfer on the same QPs with fresh
// slots (registered over the staging memory it kept); a parked sender whose receiver answers with a fresh QP resets and
// reconnects.
func TestParkAndResume(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	const chunkSize = 64 << 10
	p := newPair(t, 4, chunkSize)
	sendAll(t, p.s, p.sink, 1<<20+7, chunkSize, 1)

	offer, err := p.s.Park()
	if err != nil {
		t.Fatalf("Park after a clean Send: %v", err)
	}
	idle, err := p.r.Park()
	if err != nil {
		t.Fatalf("Park after a clean transfer: %v", err)
	}
	if offer.ConnectedQPN != idle.QPN() || idle.Peer().QPN != offer.QPN {
		t.Fatalf("offer %+v, parked endpoint QPN %#x connected to %#x: not each other's", offer, idle.QPN(), idle.Peer().QPN)
	}
	// Parked, the endpoint still holds the slots' memory (no region over it).
	if len(idle.mem) != len(p.bufs) {
		t.Fatalf("parked endpoint keeps %d staging buffers, want %d", len(idle.mem), len(p.bufs))
	}
	for i, b := range idle.mem {
		if addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b.Bytes())))); addr != p.bufs[i].Addr {
			t.Fatalf("parked staging buffer %d at %#x, slot %d was at %#x", i, addr, i, p.bufs[i].Addr)
		}
	}
	sink2 := newTestSink(t, t.TempDir())
	r2, rinfo, bufs, err := NewReceiver(Options{}, EndpointInfo{}, ReceiverConfig{Sink: sink2, Slots: 4, SlotSize: chunkSize, Resume: idle})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r2.Close() })
	if rinfo.QPN != offer.ConnectedQPN {
		t.Fatalf("resumed receiver QPN %#x, want %#x", rinfo.QPN, offer.ConnectedQPN)
	}
	// The slots are the parked staging memory again, under new keys: the
	// first transfer's rkeys died when it ended.
	for i, b := range bufs {
		if old := p.bufs[i]; b.Addr != old.Addr || b.Len != old.Len || b.RKey == old.RKey {
			t.Errorf("resumed slot %d: %+v; the parked one was %+v (want the same memory, a new rkey)", i, b, old)
		}
	}
	if err := p.s.Resume(rinfo, bufs, false); err != nil {
		t.Fatal(err)
	}
	sendAll(t, p.s, sink2, 3<<20+1, chunkSize, 2)

	// The receiver's side is gone: a fresh receiver connects to the offer
	// and the parked sender resets its QP to it.
	offer, err = p.s.Park()
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	sink3 := newTestSink(t, t.TempDir())
	r3, rinfo3, bufs3, err := NewReceiver(Options{}, offer, ReceiverConfig{Sink: sink3, Slots: 4, SlotSize: chunkSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r3.Close() })
	if err := p.s.Resume(rinfo3, bufs3, false); err == nil {
		t.Fatal("Resume onto a different receiver QP succeeded")
	}
	if err := p.s.Connect(rinfo3, bufs3); err != nil {
		t.Fatalf("reconnecting a parked sender: %v", err)
	}
	sendAll(t, p.s, sink3, 1<<20, chunkSize, 3)
}

// A sender whose QP broke cannot be parked.
func TestParkAfterFailure(t *testing.T) {
	requireDevice(t)
	p := newPair(t, 4, 64<<10)
	if err := p.s.Break(); err != nil {
		t.Fatal(err)
	}
	src, _, chunks := sourceFile(t, t.TempDir(), 256<<10, 64<<10, 4)
	if res := runSend(t, p.s, Source{File: src}, chunks, 0, nil); res.err == nil {
		t.Fatal("Send on a broken QP succeeded")
	}
	if _, err := p.s.Park(); err == nil {
		t.Fatal("Park of a broken sender succeeded")
	}
}

// Memory registered ahead (RegisterSource) is what the next Send over the
// same bytes writes from; registered for other bytes, it is dropped and
// Send registers its own; not taken, DropSource and Park drop it. No region
// outlives the sender (checkResources).
func TestRegisterSourceAhead(t *testing.T) {
	requireDevice(t)
	checkResources(t)
	const size, chunkSize = 1<<20 + 5, 64 << 10
	p := newPair(t, 4, chunkSize)
	_, data, chunks := sourceFile(t, t.TempDir(), size, chunkSize, 9)
	_, mem := memfdWindow(t, size)
	copy(mem, data)
	send := func(what string) {
		t.Helper()
		if res := runSend(t, p.s, Source{Bytes: mem, Register: true}, chunks, 0, nil); res.err != nil {
			t.Fatalf("%s: Send: %v", what, res.err)
		}
		if p.s.pre != nil {
			t.Fatalf("%s: the memory registered ahead outlived the Send", what)
		}
		got, err := os.ReadFile(p.sink.f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if i := testbedenv.FirstDiff(got[:size], data); i >= 0 {
			t.Fatalf("%s: destination differs from source at byte %d", what, i)
		}
	}

	// Which region a Send writes from: prepareSource is where it is chosen.
	writesFrom := func() *verbs.MemoryRegion {
		t.Helper()
		src, err := p.s.prepareSource(Source{Bytes: mem, Register: true}, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer src.close()
		return src.mr
	}
	register := func(b []byte) *verbs.MemoryRegion {
		t.Helper()
		if err := p.s.RegisterSource(b); err != nil {
			t.Fatal(err)
		}
		if p.s.pre == nil || !sameMemory(p.s.pre.Bytes(), b) {
			t.Fatalf("RegisterSource kept no region over the %d bytes given", len(b))
		}
		return p.s.pre
	}

	if pre := register(mem); writesFrom() != pre {
		t.Fatal("a Send over the same bytes did not write from the region registered ahead")
	}
	register(mem)
	send("registered ahead")

	if pre := register(mem[:chunkSize]); writesFrom() == pre { // other bytes
		t.Fatal("a Send over other bytes wrote from the region registered ahead")
	}
	register(mem[:chunkSize])
	send("registered ahead for other bytes")

	register(mem)
	p.s.DropSource()
	if p.s.pre != nil {
		t.Fatal("DropSource kept the memory registered ahead")
	}

	register(mem)
	if _, err := p.s.Park(); err != nil {
		t.Fatal(err)
	}
	if p.s.pre != nil {
		t.Fatal("Park kept the memory registered ahead")
	}
}
