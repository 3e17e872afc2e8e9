package transfer

import (
	"fmt"
	"testing"
	"time"
)

// TestHistoryPrunedInBatches: admitting transfers one after another keeps at
// most maxHistory+pruneSlack finished ones (pruned in batches, not sorted on
// every admission), always drops the oldest first, and never drops an
// active transfer.
func TestHistoryPrunedInBatches(t *testing.T) {
	n := &Node{cfg: Config{MaxConcurrent: 4, Observer: nopObserver{}}, transfers: make(map[key]*record)}
	active := &record{info: Info{ID: "active", Direction: Incoming, Started: time.Unix(0, 0), State: StateMoving}}
	if err := n.admit(active); err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1000, 0)
	const total = 3*maxHistory + 7
	for i := range total {
		r := &record{info: Info{ID: fmt.Sprintf("t%d", i), Direction: Outgoing, Started: start.Add(time.Duration(i) * time.Second), State: StatePending}}
		if err := n.admit(r); err != nil {
			t.Fatal(err)
		}
		n.finish(r, StateCommitted, nil)
		n.mu.Lock()
		kept := len(n.transfers) - 1 // the active one
		n.mu.Unlock()
		if kept > maxHistory+pruneSlack+1 { // +1: the one just admitted, pruned at the next admission
			t.Fatalf("after %d transfers %d finished ones are kept, want at most %d", i+1, kept, maxHistory+pruneSlack+1)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.transfers[key{Incoming, "active"}]; !ok {
		t.Fatal("the active transfer (the oldest) was pruned")
	}
	if len(n.transfers)-1 < maxHistory {
		t.Fatalf("%d finished transfers kept, want at least %d", len(n.transfers)-1, maxHistory)
	}
	// Whatever is kept is the newest: every transfer from the oldest kept on.
	oldest := total
	for k := range n.transfers {
		var i int
		if _, err := fmt.Sscanf(k.id, "t%d", &i); err == nil && i < oldest {
			oldest = i
		}
	}
	for i := oldest; i < total; i++ {
		if _, ok := n.transfers[key{Outgoing, fmt.Sprintf("t%d", i)}]; !ok {
			t.Fatalf("transfer t%d pruned while the older t%d was kept", i, oldest)
		}
	}
}
