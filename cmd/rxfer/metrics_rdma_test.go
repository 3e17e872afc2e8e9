package main

// The RDMA metrics test runs in the rdma_rxe testbed (see rdma_e2e_test.go
// for how); on the host it skips. Its file name sorts before
// rdma_e2e_test.go, whose last test deletes rxe0.

import (
	"regexp"
	"strings"
	"testing"
)

// rkeyInLog finds an rkey written into a log line: an attribute or word
// "rkey" with a number after it.
var rkeyInLog = regexp.MustCompile(`(?i)r_?key"?\s*[:=]\s*"?(0x)?[0-9a-f]+`)

// TestRDMAMetrics copies 64 MiB over RDMA between two daemons and scrapes
// both: the rdma-labelled series moved by exactly the file size, the
// finished counter by one with result ok, and at least one
// rxfer_rdma_port_* counter of the rxe device moved. The daemons log JSON
// at debug level; no line of theirs or the CLI's holds an rkey.
func TestRDMAMetrics(t *testing.T) {
	requireRDMA(t)
	const size = 64 << 20
	logArgs := []string{"--log-format", "json", "--log-level", "debug"}
	a := startDaemon(t, daemonConfig{ID: "metrics-a", Extra: logArgs})
	b := startDaemon(t, daemonConfig{ID: "metrics-b", Extra: logArgs})
	writeRandom(t, a.Path("m.bin"), size)
	ua, ub := a.metricsURL(t), b.metricsURL(t)
	beforeA, beforeB := scrapeMetrics(t, ua), scrapeMetrics(t, ub)
	last, r := copyJSON(t, a.At("/m.bin"), b.At("/"))
	checkCopy(t, last, r, a.Path("m.bin"), b.Path("m.bin"), true)
	afterA, afterB := scrapeMetrics(t, ua), scrapeMetrics(t, ub)

	for _, s := range []struct {
		name          string
		before, after scrape
		dir           string
	}{{"source", beforeA, afterA, "direction=outgoing"}, {"destination", beforeB, afterB, "direction=incoming"}} {
		delta := func(name string, labels ...string) float64 {
			return s.after.value(name, labels...) - s.before.value(name, labels...)
		}
		if d := delta("rxfer_transfer_bytes_total", s.dir, "transport=rdma"); d != size {
			t.Errorf("%s: rxfer_transfer_bytes_total{transport=rdma} moved by %v, want %d", s.name, d, size)
		}
		if d := delta("rxfer_transfers_finished_total", s.dir, "transport=rdma", "result=ok"); d != 1 {
			t.Errorf("%s: rxfer_transfers_finished_total{transport=rdma,result=ok} moved by %v, want 1", s.name, d)
		}
		series, moved := 0, 0
		for name, f := range s.after {
			if !strings.HasPrefix(name, "rxfer_rdma_port_") {
				continue
			}
			for _, m := range f.Metric {
				for _, l := range m.Label {
					if l.GetName() == "device" && l.GetValue() == rxeDevice {
						series++
						if s.after.value(name, "device="+rxeDevice) > s.before.value(name, "device="+rxeDevice) {
							moved++
						}
					}
				}
			}
		}
		if series == 0 || moved == 0 {
			t.Errorf("%s: %d rxfer_rdma_port_* series of %s, %d moved during the copy; want some that moved", s.name, series, rxeDevice, moved)
		}
	}
	a.Stop(t)
	b.Stop(t)
	for _, out := range []string{r.Stdout, r.Stderr, a.stderr.String(), b.stderr.String()} {
		if m := rkeyInLog.FindString(out); m != "" {
			t.Errorf("an rkey reached the output: %q\n%s", m, out)
		}
	}
}
