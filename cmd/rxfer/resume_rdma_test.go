package main

import (
	"sync"
	"testing"
	"time"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// TestRDMAResumeAfterReceiverKill (testbed: rdma_rxe): a 128 MiB copy over
// RDMA whose receiving daemon is killed with SIGKILL mid-copy and started
// again resumes over RDMA: the chunks that landed through the RDMA lanes
// were journaled like TCP's, and only the rest moves.
func TestRDMAResumeAfterReceiverKill(t *testing.T) {
	requireRDMA(t)
	a := startDaemon(t, daemonConfig{ID: "node-a"})
	// Fixed addresses, so that the restarted daemon is the same destination.
	b := startKillable(t, daemonConfig{ID: "node-b", Root: t.TempDir(), Listen: deadAddr(t), DataListen: deadAddr(t)})
	const size = 128 << 20
	writeRandom(t, a.Path("big.bin"), size)
	var once sync.Once
	var at int64
	run := startRxfer(t, "", func(line string) {
		var ev cpEvents
		if e := ev.onLine(line); e != nil && e.State == pb.State_STATE_MOVING && e.BytesDone > 0 && e.Transport == pb.Transport_TRANSPORT_RDMA {
			once.Do(func() {
				// Kill once the journal holds a chunk: records are appended in
				// batches (every 50 ms), so the first acknowledged chunk may
				// not be in it yet. (A hang guard only bounds the wait.)
				for guard := time.Now().Add(time.Minute); time.Now().Before(guard); time.Sleep(5 * time.Millisecond) {
					if n, _ := readJournaled(b.Root, "big.bin"); n > 0 {
						break
					}
				}
				at = e.BytesDone
				b.kill9()
			})
		}
	}, "cp", "--json", "--retries", "0", "--transport", "rdma", a.At("/big.bin"), b.At("/big.bin"))
	if r := run.Wait(t); r.Code == 0 {
		t.Fatalf("the copy finished before the receiver was killed:\n%s", r)
	}
	held := journaledBytes(t, b.Root, "big.bin")
	t.Logf("killed the receiver after %d bytes over RDMA; its journal holds %d", at, held)
	if held == 0 {
		t.Fatal("nothing journaled from the RDMA lanes")
	}
	b.restart()
	last, r := copyJSON(t, "--transport", "rdma", a.At("/big.bin"), b.At("/big.bin"))
	checkCopy(t, last, r, a.Path("big.bin"), b.Path("big.bin"), true)
	if last.ResumedBytes != held {
		t.Errorf("resumed %d bytes over RDMA, want the %d journaled", last.ResumedBytes, held)
	}
	wantEntries(t, b.Root, "big.bin")
}
