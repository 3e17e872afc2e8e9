package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/Mellanox/rdmamap"
)

// TestSystemdUnitVerifies checks deploy/rxfer.service with systemd-analyze
// verify (its ExecStart pointed at the binary under test) and that it has
// the settings the daemon needs: unlimited locked memory for RDMA, the
// hardening, the export root writable, a restart policy.
func TestSystemdUnitVerifies(t *testing.T) {
	requireBinary(t)
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Geteuid() == 0 {
			t.Fatal("systemd-analyze not found: install Debian's systemd package (make deps does, as root)")
		}
		t.Skip("skipped: systemd-analyze not found (Debian's systemd package; make deps installs it as root)")
	}
	unit, err := os.ReadFile("../../deploy/rxfer.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LimitMEMLOCK=infinity", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"ReadWritePaths=/srv/rxfer", "Restart=on-failure", "--root /srv/rxfer", "--metrics-listen", "--drain-timeout"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("deploy/rxfer.service lacks %q", want)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "rxfer.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/rxfer", rxferBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// metricName finds the metric names a PromQL expression reads.
var metricName = regexp.MustCompile(`\b(?:rxfer|go|process)_[a-z0-9_]+`)

// TestGrafanaDashboardMetrics checks that every metric name that
// deploy/grafana-dashboard.json queries is in a real scrape of a daemon
// that has copied a file (RDMA port counters only where an RDMA device
// exists: the testbed's TestRDMAMetrics checks them on rxe).
func TestGrafanaDashboardMetrics(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../../deploy/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("deploy/grafana-dashboard.json: %v", err)
	}
	a, b := startPair(t)
	writeRandom(t, a.Path("d.bin"), 1<<20)
	mustCopy(t, "", a.At("/d.bin"), b.At("/"))
	s := scrapeMetrics(t, a.metricsURL(t))
	rdmaHere := len(rdmamap.GetRdmaDeviceList()) > 0
	names := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				names++
				if strings.HasPrefix(name, "rxfer_rdma_port_") && !rdmaHere {
					continue
				}
				if !s.has(name) {
					t.Errorf("panel %q queries %s, which a scrape does not have", p.Title, name)
				}
			}
		}
	}
	if names == 0 {
		t.Fatal("the dashboard queries no metric")
	}
}

// has reports whether the scrape has a series for name, a histogram's
// _bucket, _sum and _count included.
func (s scrape) has(name string) bool {
	if f := s[name]; f != nil && len(f.Metric) > 0 {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f := s[base]; f != nil && len(f.Metric) > 0 && f.Metric[0].Histogram != nil {
				return true
			}
		}
	}
	return false
}
