package main

import (
	"path/filepath"
	"testing"
)

// TestRDMATLS (testbed: runs in the rdma_rxe VM; skips on a host without
// it): with mTLS on the control plane (node certificates from `rxfer certs
// init`, client certificates required), copies still move over RDMA with
// no fallback: node to node, pulled into the CLI (its one-copy destination
// speaks TLS with a pinned certificate) and pushed from the CLI holding a
// node certificate. rkeys and endpoints cross only inside TLS.
func TestRDMATLS(t *testing.T) {
	requireRDMA(t)
	dir := t.TempDir()
	if r := rxfer(t, "certs", "init", "--dir", dir, "--trust-domain", tlsTrustDomain,
		"--nodes", "a=127.0.0.1,b=127.0.0.1", "--clients", "ops"); r.Code != 0 {
		t.Fatalf("certs init:\n%s", r)
	}
	a := startDaemon(t, daemonConfig{ID: "a", Extra: tlsServeArgs(dir, "a")})
	b := startDaemon(t, daemonConfig{ID: "b", Extra: tlsServeArgs(dir, "b")})
	as := func(base string) []string {
		return []string{"--tls-ca", filepath.Join(dir, "ca.crt"),
			"--tls-cert", filepath.Join(dir, base+".crt"), "--tls-key", filepath.Join(dir, base+".key")}
	}
	writeRandom(t, a.Path("src.bin"), 16<<20+3)
	t.Run("node to node", func(t *testing.T) {
		last, r := copyJSON(t, append(as("client-ops"), a.At("/src.bin"), b.At("/pushed.bin"))...)
		checkCopy(t, last, r, a.Path("src.bin"), b.Path("pushed.bin"), true)
	})
	t.Run("pull into the CLI", func(t *testing.T) {
		out := t.TempDir()
		last, r := copyJSON(t, append(as("client-ops"), a.At("/src.bin"), out+"/")...)
		checkCopy(t, last, r, a.Path("src.bin"), filepath.Join(out, "src.bin"), true)
	})
	t.Run("push from the CLI with a node certificate", func(t *testing.T) {
		last, r := copyJSON(t, append(as("node-a"), a.Path("src.bin"), b.At("/from-cli.bin"))...)
		checkCopy(t, last, r, a.Path("src.bin"), b.Path("from-cli.bin"), true)
	})
	t.Run("a client without a certificate is refused", func(t *testing.T) {
		r := rxfer(t, "cp", "--tls-ca", filepath.Join(dir, "ca.crt"), a.At("/src.bin"), b.At("/refused.bin"))
		wantFailure(t, r, 1, "no client certificate", "(Unauthenticated)")
	})
	wantEntries(t, b.Root, "pushed.bin", "from-cli.bin")
}
