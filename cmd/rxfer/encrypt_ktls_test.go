package main

import (
	"os"
	"testing"

	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/internal/testbedenv"
)

// requireKTLS skips on a host without kTLS and fails inside the testbed,
// whose guest loads the tls module: a test that claims kTLS must not pass on
// the crypto/tls fallback.
func requireKTLS(t *testing.T) {
	t.Helper()
	requireBinary(t)
	if ok, why := fallback.KTLS(); !ok {
		if testbedenv.Active() {
			t.Fatalf("no kTLS in the testbed: %s", why)
		}
		t.Skipf("kTLS test skipped: %s (it runs in the testbed VM)", why)
	}
}

// TestKTLSCopy (testbed VM): an encrypted copy between two daemons uses kTLS
// on the sender — the final event says "ktls", not the crypto/tls fallback —
// and lands intact; the same copy with --ktls=false daemons says "tls". The
// rates of plaintext, kTLS and crypto/tls copies of the same file, in the
// same run, are logged as a BENCH line ($RXFER_NETNS_SIZE, default 64 MiB).
func TestKTLSCopy(t *testing.T) {
	requireKTLS(t)
	size := netnsSize(t, 64<<20)
	a := startDaemon(t, daemonConfig{ID: "ktls-a"})
	b := startDaemon(t, daemonConfig{ID: "ktls-b"})
	aUser := startDaemon(t, daemonConfig{ID: "tls-a", Root: a.Root, Extra: []string{"--ktls=false"}})
	bUser := startDaemon(t, daemonConfig{ID: "tls-b", Extra: []string{"--ktls=false"}})
	writeRandom(t, a.Path("f.bin"), size)

	rates := map[string]float64{}
	for _, tc := range []struct {
		name     string
		src, dst *daemon
		enc      string
		want     string
	}{
		{"plaintext", a, b, "off", "off"},
		{"ktls", a, b, "on", "ktls"},
		{"crypto/tls", aUser, bUser, "on", "tls"},
	} {
		// TCP: the guest has an RDMA device, which auto would pick.
		secs, got := copySeconds(t, "", "--transport", "tcp", "--data-encryption", tc.enc, tc.src.At("/f.bin"), tc.dst.At("/f.bin"))
		if got != tc.want {
			t.Fatalf("%s copy: data_encryption %q, want %q", tc.name, got, tc.want)
		}
		sameFile(t, a.Path("f.bin"), tc.dst.Path("f.bin"))
		os.Remove(tc.dst.Path("f.bin"))
		rates[tc.name] = float64(size) * 8 / secs / 1e9
		t.Logf("%s: %.2f Gbit/s", tc.name, rates[tc.name])
	}
	t.Logf("BENCH {\"bytes\": %d, \"plaintext_gbps\": %.3f, \"ktls_gbps\": %.3f, \"tls_gbps\": %.3f, \"ktls_vs_plaintext\": %.3f, \"ktls_vs_tls\": %.3f}",
		size, rates["plaintext"], rates["ktls"], rates["crypto/tls"], rates["ktls"]/rates["plaintext"], rates["ktls"]/rates["crypto/tls"])
}
