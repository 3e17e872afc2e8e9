package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/transfer"
)

// TestResumeKillLoop is issue 14's kill loop: a 256 MiB copy between two
// daemons in two network namespaces, kill -9 of the receiving daemon at a
// random point (chosen by the copy's progress events), restart, the same
// copy again: the file is byte-identical and the second run moves no more
// than the bytes missing at the kill plus one chunk per stream (measured by
// resumed_bytes). Then the same with kill -9 of the sending daemon.
// $RXFER_RESUME_ITERATIONS overrides the 20 iterations of each.
func TestResumeKillLoop(t *testing.T) {
	p := newNetnsPair(t)
	// 256 MiB last ~1.4 s at 1.5 Gbit/s: progress events (every 0.5 s)
	// fall inside the copy, so a kill point chosen by them interrupts it.
	shapeLink(t, p.NS1, "1500mbit")
	iterations := 20
	if s := os.Getenv("RXFER_RESUME_ITERATIONS"); s != "" {
		iterations, _ = strconv.Atoi(s)
	}
	const size = 256 << 20
	slack := int64(fallback.DefaultStreams) * transfer.DefaultChunkSize // one chunk per stream
	src := startKillable(t, daemonConfig{NS: p.NS1, ID: "node1", Root: t.TempDir(),
		Listen: p.IP1 + ":7470", DataListen: p.IP1 + ":7471", Extra: []string{"--insecure"}})
	dstRoot := mountTmpfs(t, "800m") // a kill leaves its files in memory, as on disk
	dst := startKillable(t, daemonConfig{NS: p.NS2, ID: "node2", Root: dstRoot,
		Listen: p.IP2 + ":7470", DataListen: p.IP2 + ":7471", Extra: []string{"--insecure"}})
	writeRandom(t, src.Path("big.bin"), size)
	seed := uint64(time.Now().UnixNano())
	t.Logf("kill points from seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 14))

	for _, victim := range []string{"receiver", "sender"} {
		k := map[string]*killable{"receiver": dst, "sender": src}[victim]
		killedRuns := 0
		for i := range iterations {
			name := fmt.Sprintf("%s-%d.bin", victim, i)
			target := int64(float64(size) * (0.05 + 0.6*rng.Float64()))
			var killed atomic.Bool
			var ackedAtKill atomic.Int64
			ev := &cpEvents{}
			run := startRxfer(t, p.NS1, func(line string) {
				e := ev.onLine(line)
				if e != nil && e.State == pb.State_STATE_MOVING && e.BytesDone >= target && killed.CompareAndSwap(false, true) {
					ackedAtKill.Store(e.BytesDone)
					k.kill9()
				}
			}, "cp", "--json", "--retries", "0", src.At("/big.bin"), dst.At("/"+name))
			r := run.Wait(t) // a Copy whose daemon died ends; it never hangs
			if !killed.Load() {
				// The copy finished before an event passed the kill point.
				if r.Code != 0 {
					t.Fatalf("iteration %d: copy failed without a kill:\n%s", i, r)
				}
				t.Logf("iteration %2d: the copy finished before the kill point", i)
				os.Remove(dst.Path(name))
				continue
			}
			if r.Code == 0 {
				// The event that passed the kill point was read late (a loaded
				// host): the copy had committed before the kill landed.
				if final := finalEvent(t, r); final.State != pb.State_STATE_COMMITTED {
					t.Fatalf("iteration %d: the copy exited 0 in state %v", i, final.State)
				}
				sameFile(t, src.Path("big.bin"), dst.Path(name))
				t.Logf("iteration %2d: the copy committed before the kill landed", i)
				k.restart()
				os.Remove(dst.Path(name))
				continue
			}
			killedRuns++
			if r.Code != 1 || !strings.Contains(r.Stderr, "(Unavailable)") {
				t.Errorf("iteration %d: the interrupted copy exited %d, want 1 and Unavailable\n%s", i, r.Code, r)
			}
			missing := size - ackedAtKill.Load()
			if victim == "receiver" {
				// What the destination held, verified and durable, at the kill.
				missing = size - journaledBytes(t, dstRoot, name)
			}
			k.restart()
			r = rxferIn(t, p.NS1, "cp", "--json", "--retries", "0", src.At("/big.bin"), dst.At("/"+name))
			if r.Code != 0 {
				t.Fatalf("iteration %d: the copy after the restart failed:\n%s", i, r)
			}
			final := finalEvent(t, r)
			moved := size - final.ResumedBytes
			t.Log(describeKill(i, victim, ackedAtKill.Load(), size, final.ResumedBytes, moved, missing+slack))
			if final.State != pb.State_STATE_COMMITTED || moved > missing+slack {
				t.Errorf("iteration %d: state %v, moved %d bytes; want committed and at most the %d missing + %d (one chunk per stream)",
					i, final.State, moved, missing, slack)
			}
			sameFile(t, src.Path("big.bin"), dst.Path(name))
			os.Remove(dst.Path(name))
		}
		if killedRuns < iterations/2 {
			t.Errorf("only %d of %d copies were interrupted by killing the %s", killedRuns, iterations, victim)
		}
	}
	wantEntries(t, dstRoot) // every copy committed: no partial file or journal left
}
