package metrics

import (
	"strconv"
	"strings"

	"github.com/Mellanox/rdmamap"
	"github.com/prometheus/client_golang/prometheus"
)

// rdmaPortCollector exports the counters the kernel keeps for each RDMA
// device port in sysfs (counters/ and hw_counters/), read with rdmamap at
// each scrape: rxfer_rdma_port_NAME_total and rxfer_rdma_port_hw_NAME_total
// with labels device and port. A host without a device has no series: that
// is not an error.
type rdmaPortCollector struct{}

func (rdmaPortCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: names come from sysfs

func (rdmaPortCollector) Collect(ch chan<- prometheus.Metric) {
	for _, dev := range rdmamap.GetRdmaDeviceList() {
		stats, err := rdmamap.GetRdmaSysfsAllPortsStats(dev)
		if err != nil {
			continue
		}
		for _, p := range stats.PortStats {
			port := strconv.Itoa(p.Port)
			emitPort(ch, "rxfer_rdma_port_", p.Stats, dev, port)
			emitPort(ch, "rxfer_rdma_port_hw_", p.HwStats, dev, port)
		}
	}
}

func emitPort(ch chan<- prometheus.Metric, prefix string, entries []rdmamap.RdmaStatEntry, dev, port string) {
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		name := counterName(e.Name)
		if name == "" || name == "lifespan" || seen[name] { // lifespan is a setting (ms), not a counter
			continue
		}
		seen[name] = true
		desc := prometheus.NewDesc(prefix+name+"_total",
			"RDMA port counter "+e.Name+" from sysfs (see the kernel's infiniband sysfs documentation for its unit).",
			[]string{"device", "port"}, nil)
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(e.Value), dev, port)
	}
}

// counterName turns a sysfs counter file name into a metric name part:
// lower case, [a-z0-9_] only, a leading "port_" dropped (rxfer_rdma_port_
// says it already). "" if nothing is left.
func counterName(file string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(file) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.TrimPrefix(b.String(), "port_")
	s = strings.TrimSuffix(s, "_total")
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return ""
	}
	return s
}
