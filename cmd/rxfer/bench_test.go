package main

import (
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// rxfer bench measures both copies in one run and reports the ratio.
func TestBenchCommand(t *testing.T) {
	t.Parallel()
	// The control-plane row has its own test (TestBenchControlTLS).
	r := rxfer(t, "bench", "--size", "4M", "--rounds", "1", "--transport", "tcp", "--json", "--control-rounds", "0", "--dir", t.TempDir())
	if r.Code != 0 {
		t.Fatalf("rxfer bench failed:\n%s", r)
	}
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("want a baseline line and an rxfer line, got:\n%s", r.Stdout)
	}
	var base, rx benchResult
	if json.Unmarshal([]byte(lines[0]), &base) != nil || json.Unmarshal([]byte(lines[1]), &rx) != nil {
		t.Fatalf("lines are not JSON:\n%s", r.Stdout)
	}
	if base.Bytes != 4<<20 || rx.Bytes != 4<<20 || base.GBps <= 0 || rx.GBps <= 0 || rx.Transport != "tcp" ||
		rx.Ratio <= 0 || rx.Ratio != base.Seconds/rx.Seconds {
		t.Fatalf("implausible results: %+v %+v", base, rx)
	}
	wantFailure(t, rxfer(t, "bench", "--size", "0"), 2, "usage")
}

// TestBenchTableSmoke runs make bench's table (TestBenchTable) on tiny sizes
// and checks its plumbing: every row is there with a status, the files
// parse, the chart is an SVG with the three series. It judges no timing
// (on a tiny copy a target may well fail; only the row's presence counts).
func TestBenchTableSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("smoke run of the bench table skipped in -short mode")
	}
	b := runBenchTable(t, benchPlans["smoke"])
	out := t.TempDir()
	if err := b.writeFiles(out); err != nil {
		t.Fatal(err)
	}
	var got benchTable
	js, err := os.ReadFile(filepath.Join(out, "bench.json"))
	if err != nil || json.Unmarshal(js, &got) != nil {
		t.Fatalf("bench.json: %v\n%s", err, js)
	}
	want := []string{"1. ", "2. ", "3. ", "3b. ", "4. ", "5. ", "6. ", "mTLS control-plane", "data encryption", "--verify mac", "resume journal cost, 2.0 MiB into a disk", "resume journal cost, 2.0 MiB into a tmpfs"}
	for _, prefix := range want {
		if !slices.ContainsFunc(got.Rows, func(r benchRow) bool { return strings.HasPrefix(r.Metric, prefix) }) {
			t.Errorf("no row %q in bench.json", prefix)
		}
	}
	checkTreeRows(t, got.Rows) // benchtable_tree_test.go
	for _, r := range got.Rows {
		if !slices.Contains([]string{statusPass, statusFail, statusInfo, statusSkip}, r.Status) || r.Target == "" ||
			r.Status != statusSkip && r.Unit == "" || r.Status == statusSkip && r.Note == "" || r.BaselineName != "" && r.Ratio == 0 && r.Baseline != 0 {
			t.Errorf("malformed row %+v", r)
		}
	}
	if got.Mode != "smoke" || got.Commit == "" || got.LoadStart == "" || len(got.Conditions) == 0 {
		t.Errorf("header: %+v", got)
	}
	series := []string{"rxfer", "read/write 4 KiB"}
	if _, err := exec.LookPath("iperf3"); err == nil {
		series = append(series, "iperf3 -Z") // else rows 1 and 2 say it is missing
	}
	for _, s := range series {
		if !slices.ContainsFunc(got.Series, func(x benchSeries) bool { return x.Name == s && len(x.Points) == 2 }) {
			t.Errorf("no chart series %q with 2 points: %+v", s, got.Series)
		}
	}
	txt, _ := os.ReadFile(filepath.Join(out, "bench.txt"))
	if !strings.Contains(string(txt), "metric") || !strings.Contains(string(txt), "ratio") || strings.Count(string(txt), "\n") < len(got.Rows)+2 {
		t.Errorf("bench.txt:\n%s", txt)
	}
	svg, _ := os.ReadFile(filepath.Join(out, "bench.svg"))
	var root struct {
		XMLName xml.Name
	}
	if xml.Unmarshal(svg, &root) != nil || root.XMLName.Local != "svg" || !strings.Contains(string(svg), "read/write 4 KiB") {
		t.Errorf("bench.svg is not an SVG chart with the series (%d bytes)", len(svg))
	}
	t.Logf("bench.txt:\n%s", txt)
}
