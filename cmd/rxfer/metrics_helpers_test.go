package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricsURL is the daemon's /metrics URL, from its second stdout line.
func (d *daemon) metricsURL(t testing.TB) string {
	t.Helper()
	select {
	case u, ok := <-d.metrics:
		if !ok {
			t.Fatalf("daemon %s printed no metrics line (is --metrics-listen off?)", d.Control)
		}
		d.metrics = closedWith(u) // later calls get the same URL
		return u
	case <-time.After(readyTimeout):
		t.Fatalf("daemon %s: no metrics line within %v", d.Control, readyTimeout)
	}
	return ""
}

func closedWith(u string) chan string {
	c := make(chan string, 1)
	c <- u
	return c
}

// scrape is one parsed /metrics exposition: every family by name.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics GETs url and parses the exposition with expfmt's text
// parser under the legacy (strict) name rules; a parse error fails the test.
func scrapeMetrics(t testing.TB, url string) scrape {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: status %d, %v", url, resp.StatusCode, err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the exposition of %s does not parse: %v\n%s", url, err, body)
	}
	return fams
}

// value sums the samples of family name whose labels include every pair
// of labels ("k=v"): a counter's or gauge's value, a histogram's count.
func (s scrape) value(name string, labels ...string) float64 {
	f := s[name]
	if f == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range f.Metric {
		for _, want := range labels {
			k, v, _ := strings.Cut(want, "=")
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}
