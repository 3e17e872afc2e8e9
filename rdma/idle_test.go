package rdma

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The pool hands out what it parked once, closes what expires, what it
// holds at close, what sits on a removed device and what its device
// reported broken.
func TestIdlePool(t *testing.T) {
	var mu sync.Mutex
	closed := map[int]bool{}
	expired := make(chan int, 4)
	p := newIdlePool(time.Hour, func(v int) { mu.Lock(); closed[v] = true; mu.Unlock() }, func(v int) { expired <- v })
	p.put("a", "d0", 1)
	p.put("a", "d0", 2)
	if v, ok := p.take("a", func(v int) bool { return v == 1 }); !ok || v != 1 {
		t.Fatalf("take matching 1: %v %v", v, ok)
	}
	if _, ok := p.take("b", nil); ok {
		t.Fatal("take from an empty key succeeded")
	}
	if p.len() != 1 {
		t.Fatalf("len %d, want 1", p.len())
	}
	short := newIdlePool(10*time.Millisecond, func(int) {}, func(v int) { expired <- v })
	short.put("k", "d0", 7)
	select {
	case v := <-expired:
		if v != 7 || short.len() != 0 {
			t.Fatalf("expired %d, %d left", v, short.len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("entry did not expire")
	}
	knobs.watchEvery = 10 * time.Millisecond
	defer func() { knobs.watchEvery = 0 }()
	gone := make(chan string, 1)
	w := newIdlePool(time.Hour, func(v int) { gone <- "closed" }, nil)
	w.gone = func(dev string) bool { return dev == "dead" }
	w.put("k", "live", 1)
	w.put("k", "dead", 2)
	select {
	case <-gone:
		if w.len() != 1 {
			t.Fatalf("%d left after the removed device's entry closed, want 1", w.len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("entry on a removed device not closed")
	}
	w.close()
	// Entries their device reported broken: never handed out, and closed by the watcher.
	var broken sync.Map
	closedBroken := make(chan int, 2)
	b := newIdlePool(time.Hour, func(v int) { closedBroken <- v }, nil)
	b.broken = func(v int) bool { _, bad := broken.Load(v); return bad }
	b.put("k", "d0", 1)
	b.put("k", "d0", 2)
	broken.Store(2, true)
	if v, ok := b.take("k", nil); !ok || v != 1 {
		t.Fatalf("take with entry 2 broken: %v %v, want 1", v, ok)
	}
	b.put("k", "d0", 1)
	select {
	case v := <-closedBroken:
		if v != 2 {
			t.Fatalf("closed entry %d, want the broken 2", v)
		}
		if v, ok := b.take("k", nil); !ok || v != 1 || b.len() != 0 {
			t.Fatalf("after the broken entry closed: take %v %v, %d left; want 1 and none", v, ok, b.len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("broken entry not closed")
	}
	b.close()
	p.close()
	p.put("a", "d0", 3) // after close: closed at once
	mu.Lock()
	defer mu.Unlock()
	if !closed[2] || closed[1] {
		t.Fatalf("closed %v after close; want 2 (parked), not 1 (taken)", closed)
	}
	if !closed[3] {
		t.Fatal("put after close did not close")
	}
}

// Closing the pool (Node.Shutdown) ends its device watcher at once, not at
// its next tick: nothing of a shut-down node keeps running.
func TestIdlePoolCloseStopsWatcher(t *testing.T) {
	before := goleak.IgnoreCurrent()
	p := newIdlePool(time.Hour, func(int) {}, nil)
	p.gone = func(string) bool { return false }
	p.put("k", "d0", 1) // starts the watcher, which ticks every watchEvery (1 s)
	p.close()
	goleak.VerifyNone(t, before)
}
