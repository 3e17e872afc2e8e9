package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// TestMetricsCopy scrapes both daemons before, during and after a 256 MiB
// copy: the bytes counters move by exactly the file size on each side, the
// started and finished counters by one (result ok), the duration histogram
// and the gRPC counters record the calls; then a cancelled copy counts as
// canceled. Every scrape parses with expfmt (strict names).
func TestMetricsCopy(t *testing.T) {
	t.Parallel()
	const size = 256 << 20
	a, b := startPair(t)
	writeRandom(t, a.Path("big.bin"), size)
	ua, ub := a.metricsURL(t), b.metricsURL(t)
	beforeA, beforeB := scrapeMetrics(t, ua), scrapeMetrics(t, ub)
	for _, name := range []string{"rxfer_build_info", "rxfer_active_transfers", "rxfer_registered_memory_bytes",
		"rxfer_rdma_parked_connections", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := beforeA[name]; !ok {
			t.Errorf("no %s in a scrape of an idle daemon", name)
		}
	}

	r, moving := firstMoving(t, pb.Transport_TRANSPORT_UNSPECIFIED, "--chunk-size", "1048576", a.At("/big.bin"), b.At("/copy.bin"))
	var duringA, duringB scrape
	select {
	case <-moving:
		duringA, duringB = scrapeMetrics(t, ua), scrapeMetrics(t, ub)
	case <-r.scanned:
	}
	if res := r.Wait(t); res.Code != 0 {
		t.Fatalf("copy failed:\n%s", res)
	}
	afterA, afterB := scrapeMetrics(t, ua), scrapeMetrics(t, ub)

	out, in := []string{"direction=outgoing", "transport=tcp"}, []string{"direction=incoming", "transport=tcp"}
	const bytes = "rxfer_transfer_bytes_total"
	if d := afterA.value(bytes, out...) - beforeA.value(bytes, out...); d != size {
		t.Errorf("source: %s{outgoing,tcp} moved by %v, want %d", bytes, d, size)
	}
	if d := afterB.value(bytes, in...) - beforeB.value(bytes, in...); d != size {
		t.Errorf("destination: %s{incoming,tcp} moved by %v, want %d", bytes, d, size)
	}
	if duringA != nil { // a scrape while the copy moved sees part of it
		for _, s := range []struct {
			name                  string
			before, during, after scrape
			labels                []string
		}{{"source", beforeA, duringA, afterA, out}, {"destination", beforeB, duringB, afterB, in}} {
			b, d, a := s.before.value(bytes, s.labels...), s.during.value(bytes, s.labels...), s.after.value(bytes, s.labels...)
			if !(b <= d && d <= a) {
				t.Errorf("%s: %s went %v, %v, %v before, during and after: not monotonic", s.name, bytes, b, d, a)
			}
			if got := s.during.value("rxfer_transfers_started_total", s.labels[0]) - s.before.value("rxfer_transfers_started_total", s.labels[0]); got != 1 {
				t.Errorf("%s: started counter moved by %v during the copy, want 1", s.name, got)
			}
		}
	}
	for _, s := range []struct {
		name          string
		before, after scrape
		dir           string
	}{{"source", beforeA, afterA, "direction=outgoing"}, {"destination", beforeB, afterB, "direction=incoming"}} {
		delta := func(name string, labels ...string) float64 {
			return s.after.value(name, labels...) - s.before.value(name, labels...)
		}
		if d := delta("rxfer_transfers_started_total", s.dir); d != 1 {
			t.Errorf("%s: rxfer_transfers_started_total moved by %v, want 1", s.name, d)
		}
		if d := delta("rxfer_transfers_finished_total", s.dir, "result=ok"); d != 1 {
			t.Errorf("%s: rxfer_transfers_finished_total{result=ok} moved by %v, want 1", s.name, d)
		}
		if d := delta("rxfer_transfer_duration_seconds", s.dir, "result=ok"); d != 1 {
			t.Errorf("%s: rxfer_transfer_duration_seconds count moved by %v, want 1", s.name, d)
		}
		if v := s.after.value("rxfer_active_transfers"); v != 0 {
			t.Errorf("%s: rxfer_active_transfers %v after the copy, want 0", s.name, v)
		}
	}
	if d := afterA.value("rxfer_grpc_server_handled_total", "method=/rxfer.v1.Transfer/Copy", "code=OK") -
		beforeA.value("rxfer_grpc_server_handled_total", "method=/rxfer.v1.Transfer/Copy", "code=OK"); d != 1 {
		t.Errorf("source: rxfer_grpc_server_handled_total{Copy,OK} moved by %v, want 1", d)
	}
	if d := afterA.value("rxfer_grpc_client_handled_total", "method=/rxfer.v1.Peer/Prepare", "code=OK"); d < 1 {
		t.Errorf("source: no Peer/Prepare counted as a client call (%v)", d)
	}
	if d := afterB.value("rxfer_grpc_server_handled_total", "method=/rxfer.v1.Peer/Commit", "code=OK"); d < 1 {
		t.Errorf("destination: no Peer/Commit counted as a served call (%v)", d)
	}
	noSecretLabels(t, afterA, a.Root)
	noSecretLabels(t, afterB, b.Root)

	// A cancelled copy counts as canceled on the source.
	r, moving = firstMoving(t, pb.Transport_TRANSPORT_UNSPECIFIED, "--chunk-size", "4096", a.At("/big.bin"), b.At("/cancelled.bin"))
	select {
	case e := <-moving:
		wantCancel(t, a, e.TransferId)
	case <-r.scanned:
	}
	if res := r.Wait(t); res.Code == 0 {
		t.Skipf("the copy finished before it could be cancelled:\n%s", res)
	}
	final := scrapeMetrics(t, ua)
	if d := final.value("rxfer_transfers_finished_total", "direction=outgoing", "result=canceled") -
		afterA.value("rxfer_transfers_finished_total", "direction=outgoing", "result=canceled"); d != 1 {
		t.Errorf("source: rxfer_transfers_finished_total{result=canceled} moved by %v after a cancel, want 1", d)
	}
}

// noSecretLabels fails if any label value looks like a path or an id:
// the label sets must stay bounded.
func noSecretLabels(t *testing.T, s scrape, root string) {
	t.Helper()
	for name, f := range s {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				v := l.GetValue()
				if strings.Contains(v, root) || strings.Contains(v, filepath.Base(os.TempDir())+"/") || len(v) >= 24 && isHex(v) {
					t.Errorf("%s has label %s=%q: a path or an id", name, l.GetName(), v)
				}
			}
		}
	}
}

func isHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef") == ""
}
