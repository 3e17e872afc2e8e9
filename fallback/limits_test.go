package fallback

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogLimiter: one line per kind per interval; the next line after a
// quiet spell counts the ones left out; kinds do not silence each other.
func TestLogLimiter(t *testing.T) {
	var buf bytes.Buffer
	ll := newLogLimiter(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute)
	now := time.Unix(1_000_000, 0)
	ll.now = func() time.Time { return now }
	for range 100 {
		ll.Log(slog.LevelWarn, "a", "refused a")
		ll.Log(slog.LevelWarn, "b", "refused b")
	}
	now = now.Add(time.Minute)
	ll.Log(slog.LevelWarn, "a", "refused a")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("logged %d lines, want 3:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[2], "refused a") || !strings.Contains(lines[2], "suppressed=99") {
		t.Errorf("line after the interval = %q, want it to count the 99 left out", lines[2])
	}
	if strings.Contains(lines[0], "suppressed") || strings.Contains(lines[1], "suppressed") {
		t.Errorf("first lines of each kind claim suppressed lines: %q", lines[:2])
	}
}
