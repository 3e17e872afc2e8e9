package main

import (
	"encoding/json"
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
