// Package metrics exports a node's metrics in the Prometheus format: its
// transfers (as transfer.Observer), its gRPC calls (interceptors), its RDMA
// ports' sysfs counters (rdmamap), registered memory, the Go runtime and
// the process. No label carries a path, an id or a token: every label value
// comes from a small fixed set (directions, transports, results, failover
// reasons, memory kinds, gRPC methods and codes, RDMA devices and ports).
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rxfer/rxfer/transfer"
	"github.com/rxfer/rxfer/verbs"
)

// DefaultListen is where `rxfer serve` serves /metrics unless told otherwise.
const DefaultListen = "127.0.0.1:7472"

// Result label values of rxfer_transfers_finished_total.
const (
	ResultOK       = "ok"
	ResultFailed   = "failed"
	ResultCanceled = "canceled"
)

// Metrics is one node's registry and the collectors that feed it.
type Metrics struct {
	reg *prometheus.Registry

	started    *prometheus.CounterVec
	finished   *prometheus.CounterVec
	bytes      *prometheus.CounterVec
	resumed    *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	failovers  *prometheus.CounterVec
	verifyFail prometheus.Counter

	grpcServerHandled *prometheus.CounterVec
	grpcServerSeconds *prometheus.HistogramVec
	grpcClientHandled *prometheus.CounterVec
	grpcClientSeconds *prometheus.HistogramVec

	mu     sync.Mutex
	active map[activeKey]*activeTransfer // transfers started and not ended
}

type activeKey struct {
	dir transfer.Direction
	id  string
}

// activeTransfer is what the bytes counter has counted of a running transfer.
type activeTransfer struct {
	info    func() transfer.Info
	counted int64 // bytes moved (not resumed) already added to rxfer_transfer_bytes_total
}

// New returns a Metrics with every collector registered; version is the
// daemon's version for rxfer_build_info.
func New(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), active: make(map[activeKey]*activeTransfer)}
	dt := []string{"direction", "transport"}
	m.started = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rxfer_transfers_started_total",
		Help: "Transfers this node admitted, by direction and the transport they started on."}, dt)
	m.finished = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rxfer_transfers_finished_total",
		Help: "Transfers that ended, by direction, transport and result (ok, failed, canceled)."}, append(dt, "result"))
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rxfer_transfer_bytes_total",
		Help: "Bytes of transfers moved and verified (resumed bytes excluded), by direction and transport; counted as chunks are verified."}, dt)
	m.resumed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rxfer_resumed_bytes_total",
		Help: "Bytes a resumed copy did not send because the destination held them verified, by direction."}, []string{"direction"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rxfer_transfer_duration_seconds",
		Help:    "How long transfers took from admission to their end, by direction, transport and result.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)}, append(dt, "result"))
	m.failovers = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rxfer_rdma_failovers_total",
		Help: "Transfers a source moved from RDMA to TCP: setup (the destination could not set RDMA up) or broken (mid-transfer)."}, []string{"reason"})
	m.verifyFail = prometheus.NewCounter(prometheus.CounterOpts{Name: "rxfer_chunk_verify_failures_total",
		Help: "Chunks landed on this node that failed their CRC32C (each is sent again)."})
	mc := []string{"method", "code"}
	latency := prometheus.ExponentialBuckets(0.0005, 4, 10)
	m.grpcServerHandled = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rxfer_grpc_server_handled_total",
		Help: "gRPC calls this node served, by method and status code."}, mc)
	m.grpcServerSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rxfer_grpc_server_handling_seconds",
		Help: "How long served gRPC calls took, by method (a Copy stream lasts as long as its transfer).", Buckets: latency}, []string{"method"})
	m.grpcClientHandled = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rxfer_grpc_client_handled_total",
		Help: "gRPC calls this node made to its peers, by method and status code."}, mc)
	m.grpcClientSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "rxfer_grpc_client_handling_seconds",
		Help: "How long gRPC calls to peers took, by method.", Buckets: latency}, []string{"method"})
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rxfer_build_info",
		Help: "Always 1: the version of rxfer, the Go version and whether cgo (and so RDMA) was built in."}, []string{"version", "goversion", "cgo"})
	buildInfo.WithLabelValues(version, runtime.Version(), cgoSetting()).Set(1)
	// Every series of the bounded label sets exists from the start (at 0),
	// so rates and dashboards work before the first event.
	for _, dir := range []string{"outgoing", "incoming"} {
		m.resumed.WithLabelValues(dir)
		for _, tr := range []string{"tcp", "rdma"} {
			m.started.WithLabelValues(dir, tr)
			m.bytes.WithLabelValues(dir, tr)
			for _, res := range []string{ResultOK, ResultFailed, ResultCanceled} {
				m.finished.WithLabelValues(dir, tr, res)
				m.duration.WithLabelValues(dir, tr, res)
			}
		}
	}
	m.failovers.WithLabelValues(transfer.FailoverSetup)
	m.failovers.WithLabelValues(transfer.FailoverBroken)
	m.reg.MustRegister(m.started, m.finished, m.resumed, m.duration, m.failovers, m.verifyFail,
		m.grpcServerHandled, m.grpcServerSeconds, m.grpcClientHandled, m.grpcClientSeconds, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		bytesCollector{m}, rdmaPortCollector{})
	return m
}

// cgoSetting is "1" when the binary was built with cgo, "0" without.
func cgoSetting() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "CGO_ENABLED" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// Registry returns the registry, for tests and for handlers.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the exposition of the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// WatchNode adds the gauges read from node at each scrape: active
// transfers, registered memory and parked RDMA connections.
func (m *Metrics) WatchNode(node *transfer.Node) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rxfer_active_transfers",
			Help: "Transfers in progress on this node, both directions."}, func() float64 { return float64(node.Active()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "rxfer_rdma_parked_connections",
			Help: "Idle RDMA queue pairs kept for reuse by a next transfer to or from the same peer."}, func() float64 {
			s, e := node.IdleRDMA()
			return float64(s + e)
		}),
		memoryCollector{node},
	)
}

// Serve serves /metrics on lis until ctx is done.
func (m *Metrics) Serve(ctx context.Context, lis net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func dirLabel(d transfer.Direction) string {
	if d == transfer.Incoming {
		return "incoming"
	}
	return "outgoing"
}

func resultLabel(s transfer.State) string {
	switch s {
	case transfer.StateCommitted:
		return ResultOK
	case transfer.StateCancelled:
		return ResultCanceled
	}
	return ResultFailed
}

// moved is what rxfer_transfer_bytes_total counts of a transfer: bytes
// verified that were sent, not held from an earlier copy.
func moved(i transfer.Info) int64 { return max(0, i.BytesDone-i.ResumedBytes) }

// Observer returns m as the engine's transfer.Observer (nil for a nil m:
// metrics off).
func (m *Metrics) Observer() transfer.Observer {
	if m == nil {
		return nil
	}
	return observer{m}
}

type observer struct{ m *Metrics }

func (o observer) TransferStarted(info func() transfer.Info) {
	i := info()
	o.m.started.WithLabelValues(dirLabel(i.Direction), i.Transport.String()).Inc()
	o.m.mu.Lock()
	o.m.active[activeKey{i.Direction, i.ID}] = &activeTransfer{info: info}
	o.m.mu.Unlock()
}

func (o observer) TransferEnded(i transfer.Info, elapsed time.Duration) {
	dir, tr, res := dirLabel(i.Direction), i.Transport.String(), resultLabel(i.State)
	o.m.mu.Lock()
	k := activeKey{i.Direction, i.ID}
	if a := o.m.active[k]; a != nil {
		o.m.addBytesLocked(a, i)
		delete(o.m.active, k)
	}
	o.m.mu.Unlock()
	o.m.finished.WithLabelValues(dir, tr, res).Inc()
	o.m.duration.WithLabelValues(dir, tr, res).Observe(elapsed.Seconds())
	if i.ResumedBytes > 0 {
		o.m.resumed.WithLabelValues(dir).Add(float64(i.ResumedBytes))
	}
}

func (o observer) RDMAFailover(reason string) {
	switch reason {
	case transfer.FailoverSetup, transfer.FailoverBroken:
	default:
		reason = "other" // keep the label set bounded whatever the engine says
	}
	o.m.failovers.WithLabelValues(reason).Inc()
}

func (o observer) ChunkVerifyFailed() { o.m.verifyFail.Inc() }

// addBytesLocked adds what transfer a moved since it was last counted.
// Bytes go to the transport carrying it at the time of counting.
func (m *Metrics) addBytesLocked(a *activeTransfer, i transfer.Info) {
	if d := moved(i) - a.counted; d > 0 {
		m.bytes.WithLabelValues(dirLabel(i.Direction), i.Transport.String()).Add(float64(d))
		a.counted += d
	}
}

// bytesCollector is rxfer_transfer_bytes_total, brought up to date with
// the running transfers as it is collected: a scrape during a copy sees its
// progress, and a copy's total is exact once it ended.
type bytesCollector struct{ m *Metrics }

func (c bytesCollector) Describe(ch chan<- *prometheus.Desc) { c.m.bytes.Describe(ch) }

func (c bytesCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	for _, a := range c.m.active {
		c.m.addBytesLocked(a, a.info())
	}
	c.m.mu.Unlock()
	c.m.bytes.Collect(ch)
}

// memoryCollector reports rxfer_registered_memory_bytes{kind}.
type memoryCollector struct{ node *transfer.Node }

var memoryDesc = prometheus.NewDesc("rxfer_registered_memory_bytes",
	"Memory held for transfers: regions (named memory regions on this node), staging (registered with the RDMA device for peers to write into: receive slots and windows), source (registered read-only source buffers).",
	[]string{"kind"}, nil)

func (memoryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- memoryDesc }

func (c memoryCollector) Collect(ch chan<- prometheus.Metric) {
	var regions int64
	for _, r := range c.node.Regions() {
		regions += r.Size
	}
	staging, source, _ := verbs.RegisteredBytes()
	ch <- prometheus.MustNewConstMetric(memoryDesc, prometheus.GaugeValue, float64(regions), "regions")
	ch <- prometheus.MustNewConstMetric(memoryDesc, prometheus.GaugeValue, float64(staging), "staging")
	ch <- prometheus.MustNewConstMetric(memoryDesc, prometheus.GaugeValue, float64(source), "source")
}
