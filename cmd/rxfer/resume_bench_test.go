package main

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

// TestNetnsJournalCost measures what the chunk journal costs (issue 14:
// at most 3%): the same 1 GiB netns copy ($RXFER_NETNS_SIZE overrides)
// with resume on (a journal) and off (cp --no-resume), to a disk root and
// to a tmpfs root, when RXFER_NETNS_BENCH=1. TestNetnsBench runs the same
// comparison.
func TestNetnsJournalCost(t *testing.T) {
	if os.Getenv("RXFER_NETNS_BENCH") != "1" {
		t.Skip("benchmark skipped: set RXFER_NETNS_BENCH=1 to measure the journal's cost on a veth")
	}
	p := newNetnsPair(t)
	n1, n2 := p.startDaemons(t)
	size := netnsSize(t, 1<<30)
	writeRandom(t, n1.Path("bench.bin"), size)
	mem := startDaemon(t, daemonConfig{NS: p.NS2, ID: "node2-tmpfs", Root: mountTmpfs(t, fmt.Sprint(3*size+64<<20)),
		Listen: p.IP2 + ":7480", DataListen: p.IP2 + ":7481", Extra: []string{"--insecure"}})
	journalCost(t, p, n1, n2, "disk", size, 4)
	journalCost(t, p, n1, mem, "tmpfs", size, 4)
}

// journalCost copies n1's bench.bin to dst with and without the journal,
// alternating which goes first, rounds times each, logs the median rates and their ratio
// (a BENCH line for machines) and returns the medians in Gbit/s.
func journalCost(t *testing.T, p netnsPair, n1, dst *daemon, root string, size int64, rounds int) (on, off float64) {
	t.Helper()
	rates := map[bool][]float64{}
	for round := range rounds {
		order := []bool{true, false}
		if round%2 == 1 {
			order = []bool{false, true} // neither side always goes first
		}
		for _, journal := range order {
			args := []string{"cp", "--json", "--force", "--retries", "0"}
			if !journal {
				args = append(args, "--no-resume")
			}
			// Each copy starts from an empty destination: replacing the last
			// copy would hold two of them (a full tmpfs root) and time the unlink.
			os.Remove(dst.Path("journal.bin"))
			r := rxferIn(t, p.NS1, append(args, n1.At("/bench.bin"), dst.At("/journal.bin"))...)
			if r.Code != 0 {
				t.Fatalf("copy failed:\n%s", r)
			}
			e := finalEvent(t, r)
			rates[journal] = append(rates[journal], float64(size)*8/e.GetResult().GetSeconds()/1e9)
		}
	}
	median := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	on, off = median(rates[true]), median(rates[false])
	t.Logf("rxfer to a %s root, journal on vs off (median of %d): %.2f vs %.2f Gbit/s, cost %.1f%%", root, rounds, on, off, 100*(1-on/off))
	t.Logf("BENCH {\"journal_root\": %q, \"bytes\": %d, \"journal_on_gbps\": %.3f, \"journal_off_gbps\": %.3f, \"journal_cost_pct\": %.1f}",
		root, size, on, off, 100*(1-on/off))
	sameFile(t, n1.Path("bench.bin"), dst.Path("journal.bin"))
	os.Remove(dst.Path("journal.bin"))
	return on, off
}
