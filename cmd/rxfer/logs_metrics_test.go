package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLogsCarryTransferAndNoSecrets runs a copy between two daemons with a
// bearer token, JSON logs at debug level, and the CLI: no output of any of
// them contains the token, and every JSON log line about a transfer carries
// its id, peer, direction and transport. (Data-channel tokens never leave
// the daemons' memory, so a test cannot know them; rkeys are RDMA-only and
// covered by the testbed's TestRDMAMetrics.)
func TestLogsCarryTransferAndNoSecrets(t *testing.T) {
	t.Parallel()
	const token = "tok-7c1d0e5a9b3f4e2d8c6a1b0f9e8d7c6b"
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logArgs := []string{"--log-format", "json", "--log-level", "debug"}
	a := startDaemon(t, daemonConfig{ID: "logs-a", TokenFile: tokFile, Extra: logArgs})
	b := startDaemon(t, daemonConfig{ID: "logs-b", TokenFile: tokFile, Extra: logArgs})
	writeRandom(t, a.Path("x.bin"), 3<<20)
	outputs := []string{}
	cp := mustCopy(t, "", "--token-file", tokFile, a.At("/x.bin"), b.At("/"))
	outputs = append(outputs, cp.Stdout, cp.Stderr)
	bad := rxfer(t, "cp", "--token-file", tokFile, "--retries", "0", a.At("/missing.bin"), b.At("/"))
	outputs = append(outputs, bad.Stdout, bad.Stderr)
	status := rxfer(t, "status", "--token-file", tokFile, b.Control)
	outputs = append(outputs, status.Stdout, status.Stderr)
	a.Stop(t)
	b.Stop(t)
	outputs = append(outputs, a.stderr.String(), b.stderr.String())
	for i, out := range outputs {
		if strings.Contains(out, token) {
			t.Errorf("output %d contains the bearer token:\n%s", i, out)
		}
	}
	transferLines := 0
	for _, log := range []string{a.stderr.String(), b.stderr.String()} {
		for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("--log-format json wrote a line that is not JSON: %q: %v", line, err)
				continue
			}
			if _, ok := rec["transfer"]; !ok {
				continue
			}
			transferLines++
			for _, k := range []string{"peer", "direction", "transport"} {
				if v, ok := rec[k].(string); !ok || v == "" {
					t.Errorf("a log line about a transfer has no %s: %s", k, line)
				}
			}
		}
	}
	if transferLines == 0 {
		t.Errorf("no log line about a transfer in either daemon's log:\n%s\n%s", a.stderr, b.stderr)
	}
}
