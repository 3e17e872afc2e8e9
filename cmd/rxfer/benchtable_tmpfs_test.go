package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// benchHugeTmpfs is row 1's copy into a tmpfs mounted huge=within_size,
// reported next to row 1. Into a default tmpfs the receiving daemon spends
// about a third of its CPU allocating the file's pages one 4 KiB page at a
// time (shmem_alloc_and_add_folio, README.md); with large folios that cost
// mostly goes, which shows how much of row 1's gap is the file system's.
func benchHugeTmpfs(t *testing.T, p netnsPair, plan benchPlan, src *daemon, srcName string, serve []string, iperf float64) benchRow {
	t.Helper()
	metric := fmt.Sprintf("1h. %s netns copy into a tmpfs root mounted huge=within_size vs iperf3 -Z", size(plan.Size))
	root := t.TempDir()
	if out, err := system("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,huge=within_size", plan.Size+256<<20), "rxfer-bench-huge", root); err != nil {
		return skipRow(metric, "reported", fmt.Sprintf("cannot mount a tmpfs with huge=within_size: %v: %s", err, out))
	}
	t.Cleanup(func() { // registered before the daemon's: runs after it stopped
		if out, err := system("umount", root); err != nil {
			t.Errorf("umount %s: %v: %s", root, err, out)
		}
	})
	d := startDaemon(t, daemonConfig{NS: p.NS2, ID: "bench-huge", Root: root, Listen: p.IP2 + ":7510", DataListen: p.IP2 + ":7511", Extra: serve})
	var rates []float64
	for round := range plan.Rounds {
		secs, _ := copySeconds(t, p.NS1, src.At("/"+srcName), d.At("/rx.bin"))
		rates = append(rates, gbps(plan.Size, secs))
		if round == 0 {
			sameFile(t, src.Path(srcName), d.Path("rx.bin"))
		}
		os.Remove(d.Path("rx.bin"))
	}
	note := fmt.Sprintf("first copy %.3f GB/s (a fresh mount assembles its huge pages), best of %d; row 1 is the default tmpfs (4 KiB pages)", rates[0], len(rates))
	if iperf <= 0 {
		return infoRow(metric, "GB/s", best(rates), note)
	}
	return ratioRow(metric, "GB/s", best(rates), iperf, "iperf3 -Z", 0, note)
}

// benchLatencyTmpfs is row 4's API copy between daemons whose roots are
// tmpfs, reported next to row 4 (disk roots): a tmpfs fsync returns at
// once, so this is the protocol's share of row 4, and the difference is
// the two fsyncs a durable commit costs on the disk (file, then directory).
func benchLatencyTmpfs(t *testing.T, plan benchPlan, broken func(string, string, error) benchRow) []benchRow {
	t.Helper()
	api := fmt.Sprintf("4t. 4 KiB copy via the gRPC API, loopback, tmpfs roots, %d copies", plan.APICopies)
	srcRoot, dstRoot := mountTmpfs(t, "64m"), mountTmpfs(t, "64m")
	a := startDaemon(t, daemonConfig{ID: "bench-api-tmpfs-src", Root: srcRoot})
	d := startDaemon(t, daemonConfig{ID: "bench-api-tmpfs-dst", Root: dstRoot})
	small := make([]byte, 4<<10)
	rand.Read(small)
	writeFile(t, a.Path("small.bin"), small)
	conn, err := grpc.NewClient(a.Control, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return []benchRow{broken(api, "reported", err)}
	}
	defer conn.Close()
	var ms []float64
	for i := range plan.APICopies + 20 { // the first 20 warm the connections
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		err := copyRPC(ctx, conn, "/small.bin", d.Control, "/small.bin")
		cancel()
		if err != nil {
			return []benchRow{broken(api, "reported", err)}
		}
		if i >= 20 {
			ms = append(ms, float64(time.Since(start).Microseconds())/1e3)
		}
	}
	return []benchRow{
		infoRow(api+", p50", "ms", percentile(ms, 50), "as row 4 but both roots on tmpfs (fsync returns at once): the protocol's share"),
		infoRow(api+", p99", "ms", percentile(ms, 99), ""),
	}
}
