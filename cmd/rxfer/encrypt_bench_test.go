package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// copySeconds runs `rxfer cp --json args...` in ns and returns the
// daemon-measured seconds from request to commit and the data_encryption the
// final event reports.
func copySeconds(t *testing.T, ns string, args ...string) (float64, string) {
	t.Helper()
	r := rxferIn(t, ns, append([]string{"cp", "--json", "--force"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("copy failed:\n%s", r)
	}
	var final struct {
		DataEncryption string `json:"data_encryption"`
		Result         struct {
			Seconds float64 `json:"seconds"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.lastLine()), &final); err != nil || final.Result.Seconds == 0 {
		t.Fatalf("no result in the last event %q: %v", r.lastLine(), err)
	}
	return final.Result.Seconds, final.DataEncryption
}

// benchDataEncryption measures, on TestNetnsBench's veth and in the same
// run, copies into a tmpfs root (the network path without the destination
// disk): plaintext TCP, TLS (kTLS where the kernel offers it, else
// crypto/tls), and plaintext with --verify mac, in interleaved rounds
// (rounds of them), logs the medians and ratios as a BENCH line and returns
// them (make bench's table has them as rows).
func benchDataEncryption(t *testing.T, p netnsPair, src *daemon, size int64, rounds int) encResult {
	root := mountTmpfs(t, fmt.Sprint(size+64<<20))
	// Two daemons on one tmpfs root: one offers no encryption (plaintext
	// rows), one requires it across the network (the default, auto).
	plain := startDaemon(t, daemonConfig{NS: p.NS2, ID: "bench-plain", Root: root,
		Listen: p.IP2 + ":7490", DataListen: p.IP2 + ":7491", Extra: []string{"--insecure", "--data-encryption", "off"}})
	enc := startDaemon(t, daemonConfig{NS: p.NS2, ID: "bench-tls", Root: root,
		Listen: p.IP2 + ":7492", DataListen: p.IP2 + ":7493", Extra: []string{"--insecure"}})
	rows := []struct {
		name string
		dst  *daemon
		args []string
	}{
		{"tcp_off", plain, []string{"--data-encryption", "off"}},
		{"tcp_tls", enc, []string{"--data-encryption", "on"}},
		{"tcp_off_mac", plain, []string{"--data-encryption", "off", "--verify", "mac"}},
	}
	gbps := map[string][]float64{}
	var tlsKind string
	for i := range rounds {
		for _, row := range rows {
			secs, kind := copySeconds(t, p.NS1, append(row.args, src.At("/bench.bin"), row.dst.At("/enc.bin"))...)
			if row.name == "tcp_tls" {
				tlsKind = kind
			}
			rate := float64(size) * 8 / secs / 1e9
			gbps[row.name] = append(gbps[row.name], rate)
			t.Logf("rxfer round %d %s (%s): %.2f Gbit/s", i, row.name, kind, rate)
			sameFile(t, src.Path("bench.bin"), filepath.Join(root, "enc.bin"))
			os.Remove(filepath.Join(root, "enc.bin"))
		}
	}
	med := func(name string) float64 { return median(slices.Clone(gbps[name])) }
	off, on, mac := med("tcp_off"), med("tcp_tls"), med("tcp_off_mac")
	t.Logf("rxfer to tmpfs, medians of %d rounds: plaintext %.2f, %s %.2f (%.2fx), plaintext + --verify mac %.2f Gbit/s (%.2fx)",
		rounds, off, tlsKind, on, on/off, mac, mac/off)
	t.Logf("BENCH {\"bytes\": %d, \"rounds\": %d, \"tcp_off_gbps\": %.3f, \"tcp_encrypted_gbps\": %.3f, \"encryption\": %q, \"ratio_encrypted_vs_off\": %.3f, \"tcp_off_mac_gbps\": %.3f, \"ratio_mac_vs_off\": %.3f}",
		size, rounds, off, on, tlsKind, on/off, mac, mac/off)
	return encResult{Off: off, On: on, MAC: mac, Kind: tlsKind}
}

// encResult is benchDataEncryption's medians in Gbit/s and the encryption
// the encrypted copies used (kTLS or crypto/tls).
type encResult struct {
	Off, On, MAC float64
	Kind         string
}

// envRounds is $RXFER_BENCH_ROUNDS, or def.
func envRounds(def int) int {
	if v, err := strconv.Atoi(os.Getenv("RXFER_BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return def
}
