package main

// The table `make bench` prints (scripts/bench.sh runs TestBenchTable): its
// rows, their targets, and the three files it writes (bench.txt,
// bench.json, bench.svg).

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Row statuses: a row with a target passes or fails; one without is reported.
const (
	statusPass = "PASS"
	statusFail = "FAIL"
	statusInfo = "INFO" // reported, no target
	statusSkip = "SKIP" // not measured in this run; Note says why
)

// benchRow is one line of the table: the metric, rxfer's value and the
// baseline's (in Unit), their ratio, the target and the verdict.
type benchRow struct {
	Metric       string  `json:"metric"`
	Unit         string  `json:"unit"`
	Rxfer        float64 `json:"rxfer"`
	Baseline     float64 `json:"baseline"`
	BaselineName string  `json:"baseline_name,omitempty"`
	Ratio        float64 `json:"ratio"`
	Target       string  `json:"target"`
	Status       string  `json:"status"`
	Note         string  `json:"note,omitempty"`
}

// ratioRow compares rxfer's rate with a baseline's: it passes when
// rxfer/baseline ≥ want (want 0: reported only).
func ratioRow(metric, unit string, rx, base float64, baseName string, want float64, note string) benchRow {
	r := benchRow{Metric: metric, Unit: unit, Rxfer: rx, Baseline: base, BaselineName: baseName, Note: note, Status: statusInfo, Target: "reported"}
	if base > 0 {
		r.Ratio = rx / base
	}
	if want > 0 {
		r.Target = fmt.Sprintf(">= %.1fx", want)
		r.Status = verdict(base > 0 && r.Ratio >= want)
	}
	return r
}

// maxRow passes when rxfer's value is at most limit.
func maxRow(metric, unit string, v, limit float64, note string) benchRow {
	return benchRow{Metric: metric, Unit: unit, Rxfer: v, Target: fmt.Sprintf("<= %g %s", limit, unit), Status: verdict(v <= limit), Note: note}
}

// infoRow reports a value without a target.
func infoRow(metric, unit string, v float64, note string) benchRow {
	return benchRow{Metric: metric, Unit: unit, Rxfer: v, Target: "reported", Status: statusInfo, Note: note}
}

// skipRow is a row this run could not measure, and why.
func skipRow(metric, target, why string) benchRow {
	return benchRow{Metric: metric, Target: target, Status: statusSkip, Note: why}
}

func verdict(ok bool) string {
	if ok {
		return statusPass
	}
	return statusFail
}

// benchPoint is one throughput measurement for the chart.
type benchPoint struct {
	Bytes int64   `json:"bytes"`
	GBps  float64 `json:"gb_per_s"`
}

// benchSeries is one line of the chart: a sender/receiver's rate by file size.
type benchSeries struct {
	Name   string       `json:"name"`
	Points []benchPoint `json:"points"`
}

// benchTable is everything one `make bench` run measured, with the
// conditions it ran under.
type benchTable struct {
	Commit     string        `json:"commit"`
	Started    string        `json:"started"`
	Seconds    float64       `json:"seconds"`
	Mode       string        `json:"mode"` // full, quick or smoke
	Kernel     string        `json:"kernel"`
	CPUs       int           `json:"cpus"`
	LoadStart  string        `json:"loadavg_start"` // /proc/loadavg when the run began
	LoadEnd    string        `json:"loadavg_end"`
	Conditions []string      `json:"conditions"` // how each run starts: cache state, sync, emptied destinations
	Rows       []benchRow    `json:"rows"`
	Series     []benchSeries `json:"series"`
}

// add appends rows.
func (b *benchTable) add(rows ...benchRow) { b.Rows = append(b.Rows, rows...) }

// point adds a measurement to the series called name.
func (b *benchTable) point(name string, bytes int64, gbps float64) {
	for i := range b.Series {
		if b.Series[i].Name == name {
			b.Series[i].Points = append(b.Series[i].Points, benchPoint{bytes, gbps})
			return
		}
	}
	b.Series = append(b.Series, benchSeries{Name: name, Points: []benchPoint{{bytes, gbps}}})
}

// failed counts the rows that missed their target.
func (b *benchTable) failed() int {
	n := 0
	for _, r := range b.Rows {
		if r.Status == statusFail {
			n++
		}
	}
	return n
}

// fmtValue prints v in unit with the precision the unit deserves.
func fmtValue(v float64, unit string) string {
	switch {
	case unit == "":
		return "-"
	case unit == "%" || unit == "ms":
		return fmt.Sprintf("%.2f %s", v, unit)
	case unit == "GB/s":
		return fmt.Sprintf("%.3f %s", v, unit)
	case unit == "MiB":
		return fmt.Sprintf("%.1f %s", v, unit)
	case unit == "count":
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%g %s", v, unit)
	}
}

// writeText prints the table: metric, rxfer, baseline, ratio, target,
// PASS/FAIL, then the notes and the conditions.
func (b *benchTable) writeText(w io.Writer) error {
	fmt.Fprintf(w, "rxfer bench (%s) on commit %s, %s, kernel %s, %d CPUs, loadavg %s at start, %s at end, %.0f s\n",
		b.Mode, b.Commit, b.Started, b.Kernel, b.CPUs, b.LoadStart, b.LoadEnd, b.Seconds)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tmetric\trxfer\tbaseline\tratio\ttarget\tresult\t")
	for i, r := range b.Rows {
		rx, base, ratio := "-", "-", "-"
		if r.Status != statusSkip {
			rx = fmtValue(r.Rxfer, r.Unit)
		}
		if r.BaselineName != "" && r.Status != statusSkip {
			base = fmtValue(r.Baseline, r.Unit) + " " + r.BaselineName
		}
		if r.Ratio != 0 {
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", i+1, r.Metric, rx, base, ratio, r.Target, r.Status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i, r := range b.Rows {
		if r.Note != "" {
			fmt.Fprintf(w, "  [%d] %s\n", i+1, r.Note)
		}
	}
	for _, c := range b.Conditions {
		fmt.Fprintf(w, "  * %s\n", c)
	}
	_, err := fmt.Fprintf(w, "%d rows, %d FAIL\n", len(b.Rows), b.failed())
	return err
}

// writeFiles writes bench.txt, bench.json and bench.svg into dir.
func (b *benchTable) writeFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var txt strings.Builder
	if err := b.writeText(&txt); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.txt"), []byte(txt.String()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return b.writeChart(filepath.Join(dir, "bench.svg"))
}

// writeChart draws throughput against file size, one line per series
// (rxfer, the 4 KiB read/write pair, iperf3 -Z), with gonum/plot.
func (b *benchTable) writeChart(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Throughput across a veth between two network namespaces (%s)", b.Commit)
	p.X.Label.Text = "file size (MiB, log scale)"
	p.Y.Label.Text = "GB/s (10^9 bytes per second)"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	var lines []any
	for _, s := range b.Series {
		xy := make(plotter.XYs, len(s.Points))
		for i, pt := range s.Points {
			xy[i] = plotter.XY{X: float64(pt.Bytes) / (1 << 20), Y: pt.GBps}
		}
		lines = append(lines, s.Name, xy)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return err
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, path) // the .svg extension picks vgsvg
}
