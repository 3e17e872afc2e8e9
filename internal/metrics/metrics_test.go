package metrics

import (
	"bytes"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/rxfer/rxfer/transfer"
)

// scrape serves m's handler once and parses it with expfmt (strict names).
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(rec.Body.Bytes()))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, rec.Body)
	}
	return fams
}

func counter(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestObserverCountsBytesOnce drives the observer as the engine does: bytes
// seen by scrapes while a transfer runs, then its end, add up to exactly the
// bytes moved (resumed ones apart), and the result and duration are counted.
func TestObserverCountsBytesOnce(t *testing.T) {
	m := New("test")
	o := m.Observer()
	var mu sync.Mutex
	info := transfer.Info{ID: "abc", Direction: transfer.Incoming, Transport: transfer.TransportTCP, BytesTotal: 100, State: transfer.StateMoving}
	read := func() transfer.Info { mu.Lock(); defer mu.Unlock(); return info }
	set := func(done, resumed int64) { mu.Lock(); info.BytesDone, info.ResumedBytes = done, resumed; mu.Unlock() }
	o.TransferStarted(read)
	tcpIn := map[string]string{"direction": "incoming", "transport": "tcp"}
	set(30, 20) // a resume: 20 bytes held, 10 moved
	if got := counter(scrape(t, m), "rxfer_transfer_bytes_total", tcpIn); got != 10 {
		t.Errorf("during: bytes %v, want 10", got)
	}
	set(70, 20)
	if got := counter(scrape(t, m), "rxfer_transfer_bytes_total", tcpIn); got != 50 {
		t.Errorf("during: bytes %v, want 50", got)
	}
	set(100, 20)
	final := read()
	final.State = transfer.StateCommitted
	o.TransferEnded(final, 2*time.Second)
	fams := scrape(t, m)
	if got := counter(fams, "rxfer_transfer_bytes_total", tcpIn); got != 80 {
		t.Errorf("after: bytes %v, want 80", got)
	}
	if got := counter(fams, "rxfer_resumed_bytes_total", map[string]string{"direction": "incoming"}); got != 20 {
		t.Errorf("resumed %v, want 20", got)
	}
	ok := map[string]string{"direction": "incoming", "transport": "tcp", "result": "ok"}
	if got := counter(fams, "rxfer_transfers_finished_total", ok); got != 1 {
		t.Errorf("finished ok %v, want 1", got)
	}
	if got := counter(fams, "rxfer_transfer_duration_seconds", ok); got != 1 {
		t.Errorf("duration count %v, want 1", got)
	}
	o.RDMAFailover("a path /etc/passwd") // never a label value
	if got := counter(scrape(t, m), "rxfer_rdma_failovers_total", map[string]string{"reason": "other"}); got != 1 {
		t.Errorf("an unknown failover reason counts as other: %v", got)
	}
	for _, want := range []string{"rxfer_build_info", "go_goroutines", "process_cpu_seconds_total", "rxfer_chunk_verify_failures_total"} {
		if _, ok := fams[want]; !ok {
			t.Errorf("no %s", want)
		}
	}
}

func TestCounterName(t *testing.T) {
	for in, want := range map[string]string{"port_xmit_data": "xmit_data", "sent_pkts": "sent_pkts", "VL15_dropped": "vl15_dropped",
		"rx-write.requests": "rx_write_requests", "1bad": "", "": "", "x_total": "x"} {
		if got := counterName(in); got != want {
			t.Errorf("counterName(%q) = %q, want %q", in, got, want)
		}
	}
}
