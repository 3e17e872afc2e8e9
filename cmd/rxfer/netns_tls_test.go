package main

// mTLS end-to-end tests (issue 13, control plane): daemons in two network
// namespaces serve TLS 1.3 with node certificates from `rxfer certs init`,
// require client certificates, and the CLI runs as a subprocess with
// client certificates. Root only (they skip otherwise).

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rxfer/rxfer/internal/pki"
)

const tlsTrustDomain = "lab.test"

// tlsCluster is two mTLS daemons, node1 in NS1 and node2 in NS2, and the
// certificates (DIR/ca.crt, node-node1.*, node-node2.*, client-ops.*, client-guest.*).
type tlsCluster struct {
	netnsPair
	dir    string
	n1, n2 *daemon
}

// certsInit runs `rxfer certs init` for node1 and node2 (with their IP
// SANs) and the clients ops and guest.
func certsInit(t *testing.T, dir string, p netnsPair, extra ...string) {
	t.Helper()
	args := append([]string{"certs", "init", "--dir", dir, "--trust-domain", tlsTrustDomain,
		"--nodes", fmt.Sprintf("node1=%s,node2=%s", p.IP1, p.IP2), "--clients", "ops,guest"}, extra...)
	if r := rxfer(t, args...); r.Code != 0 {
		t.Fatalf("certs init:\n%s", r)
	}
}

// tlsServeArgs are the serve flags of a node with id's certificate.
func tlsServeArgs(dir, id string) []string {
	return []string{"--tls-cert", filepath.Join(dir, "node-"+id+".crt"), "--tls-key", filepath.Join(dir, "node-"+id+".key"),
		"--tls-client-ca", filepath.Join(dir, "ca.crt")}
}

// newTLSCluster starts the two daemons (with extra serve flags) on their
// veth addresses, without --insecure: mTLS is their protection.
func newTLSCluster(t *testing.T, extra ...string) *tlsCluster {
	t.Helper()
	c := &tlsCluster{netnsPair: newNetnsPair(t), dir: t.TempDir()}
	certsInit(t, c.dir, c.netnsPair)
	start := func(ns, ip, id string) *daemon {
		return startDaemon(t, daemonConfig{NS: ns, ID: id, Listen: ip + ":7470", DataListen: ip + ":7471",
			Extra: append(tlsServeArgs(c.dir, id), extra...)})
	}
	c.n1, c.n2 = start(c.NS1, c.IP1, "node1"), start(c.NS2, c.IP2, "node2")
	return c
}

// as are the CLI's TLS flags for a certificate base name ("client-ops", "node-node1").
func (c *tlsCluster) as(base string) []string {
	return []string{"--tls-ca", filepath.Join(c.dir, "ca.crt"),
		"--tls-cert", filepath.Join(c.dir, base+".crt"), "--tls-key", filepath.Join(c.dir, base+".key")}
}

// cp runs `rxfer cp` in ns with TLS flags and arguments.
func (c *tlsCluster) cp(t *testing.T, ns string, tlsArgs []string, args ...string) result {
	t.Helper()
	return rxferIn(t, ns, append(append([]string{"cp", "--chunk-size", "65536"}, tlsArgs...), args...)...)
}

func TestNetnsTLSCopies(t *testing.T) {
	c := newTLSCluster(t)
	writeRandom(t, c.n1.Path("big.bin"), 4<<20)
	pulled := t.TempDir()
	tests := []struct {
		name, ns, as, src, dst, got string
	}{
		{"push node1 to node2, asked by client ops", c.NS1, "client-ops", c.n1.At("/big.bin"), c.n2.At("/pushed.bin"), c.n2.Path("pushed.bin")},
		{"pull node1 to the CLI (client ops) in ns2", c.NS2, "client-ops", c.n1.At("/big.bin"), pulled + "/", filepath.Join(pulled, "big.bin")},
		{"push a local file to node2 with node1's certificate", c.NS1, "node-node1", c.n1.Path("big.bin"), c.n2.At("/from-cli.bin"), c.n2.Path("from-cli.bin")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rxferIn(t, tt.ns, append(append([]string{"cp"}, c.as(tt.as)...), tt.src, tt.dst)...)
			if r.Code != 0 || !strings.HasPrefix(r.lastLine(), "copied ") {
				t.Fatalf("copy failed:\n%s", r)
			}
			sameFile(t, c.n1.Path("big.bin"), tt.got)
		})
	}
	wantEntries(t, c.n2.Root, "pushed.bin", "from-cli.bin")
	wantEntries(t, pulled, "big.bin")

	// The node's certificate is what the CLI sees.
	r := rxferIn(t, c.NS1, append(append([]string{"status"}, c.as("client-ops")...), c.n1.Control)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "tls: TLS 1.3, node node1 (spiffe://lab.test/node/node1)") {
		t.Fatalf("status does not show node1's certificate:\n%s", r)
	}
}

// TestNetnsTLSRefusals: who has no certificate, one from another CA, an
// expired one, or only a client identity for the Peer service is refused
// with a code and a message that say which.
func TestNetnsTLSRefusals(t *testing.T) {
	c := newTLSCluster(t)
	writeRandom(t, c.n1.Path("src.bin"), 64<<10)
	caFile := filepath.Join(c.dir, "ca.crt")

	// Another CA, with the same trust domain and names.
	otherDir := t.TempDir()
	certsInit(t, otherDir, c.netnsPair)
	// An expired client certificate from the right CA.
	ca, err := pki.LoadCA(caFile, filepath.Join(c.dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	expiredAt := time.Now().Add(-time.Hour).Truncate(time.Second)
	writeCert(t, c.dir, "client-old", ca, pki.Identity{Kind: pki.KindClient, Name: "old", TrustDomain: tlsTrustDomain},
		pki.Validity{NotBefore: expiredAt.Add(-time.Hour), NotAfter: expiredAt})

	copyArgs := []string{c.n1.At("/src.bin"), c.n2.At("/dst.bin")}
	tests := []struct {
		name  string
		flags []string
		args  []string
		want  []string
	}{
		{"no client certificate", []string{"--tls-ca", caFile}, copyArgs,
			[]string{"no client certificate: this node requires one signed by its client CA", "(Unauthenticated)"}},
		{"certificate from another CA", []string{"--tls-ca", caFile, "--tls-cert", filepath.Join(otherDir, "client-ops.crt"), "--tls-key", filepath.Join(otherDir, "client-ops.key")}, copyArgs,
			[]string{"client certificate refused: certificate not signed by a trusted CA: certificate of client ops (spiffe://lab.test/client/ops)", "which is not in " + caFile, "(Unauthenticated)"}},
		{"expired certificate", c.as("client-old"), copyArgs,
			[]string{"client certificate refused: certificate expired or not yet valid: certificate of client old (spiffe://lab.test/client/old)", "expired at " + expiredAt.UTC().Format(time.RFC3339), "(Unauthenticated)"}},
		{"client identity calling Peer", c.as("client-ops"), []string{c.n1.Path("src.bin"), c.n2.At("/dst.bin")},
			[]string{"client ops (spiffe://lab.test/client/ops) may not call the Peer service: only node identities may", "(PermissionDenied)"}},
		{"a node verified with another CA", []string{"--tls-ca", filepath.Join(otherDir, "ca.crt"), "--tls-cert", filepath.Join(otherDir, "client-ops.crt"), "--tls-key", filepath.Join(otherDir, "client-ops.key")}, copyArgs,
			[]string{"node at " + c.IP1 + ": certificate not signed by a trusted CA: certificate of node node1 (spiffe://lab.test/node/node1)", "(Unavailable)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rxferIn(t, c.NS1, append(append([]string{"cp"}, tt.flags...), tt.args...)...)
			wantFailure(t, r, 1, tt.want...)
		})
	}
	wantEntries(t, c.n2.Root)

	// Plain gRPC without TLS gets nowhere either.
	r := rxferIn(t, c.NS1, "status", c.n1.Control)
	wantFailure(t, r, 1, "(Unavailable)")
}

// writeCert issues a certificate for id from ca, valid for v, as DIR/BASE.crt and .key.
func writeCert(t *testing.T, dir, base string, ca *pki.CA, id pki.Identity, v pki.Validity, hosts ...string) *x509.Certificate {
	t.Helper()
	cert, key, err := ca.Issue(id, hosts, v)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, base+".key"), kp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, base+".crt"), pki.CertPEM(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	return cert
}

const tlsTestPolicy = `
[[allow]]
name = "nodes"
identities = ["node/*"]
read = ["/"]
write = ["/"]
peer = true

[[allow]]
name = "ops-data"
identities = ["client/ops"]
read = ["/"]
write = ["/data"]
`

// TestNetnsTLSPolicy: with --authz, a client may write only where its rule
// says; a denied write is PermissionDenied naming the identity and the
// rule, and creates nothing on the destination.
func TestNetnsTLSPolicy(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "authz.toml")
	writeFile(t, policy, []byte(tlsTestPolicy))
	c := newTLSCluster(t, "--authz", policy)
	writeRandom(t, c.n1.Path("src.bin"), 1<<20)
	if err := os.Mkdir(c.n2.Path("data"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(c.n2.Path("etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := c.cp(t, c.NS1, c.as("client-ops"), c.n1.At("/src.bin"), c.n2.At("/etc/passwd"))
	wantFailure(t, r, 1, `client ops (spiffe://lab.test/client/ops) may not write "/etc/passwd": policy `+policy+` lets it write only beneath /data (rule "ops-data")`,
		"(PermissionDenied)")
	wantEntries(t, c.n2.Path("etc"))

	// guest is named by no rule: refused at the door.
	r = c.cp(t, c.NS1, c.as("client-guest"), c.n1.At("/src.bin"), c.n2.At("/data/guest.bin"))
	wantFailure(t, r, 1, "client guest (spiffe://lab.test/client/guest) may not call this node: no rule of policy "+policy+" names it", "(PermissionDenied)")

	r = c.cp(t, c.NS1, c.as("client-ops"), c.n1.At("/src.bin"), c.n2.At("/data/ok.bin"))
	if r.Code != 0 {
		t.Fatalf("a copy the policy allows failed:\n%s", r)
	}
	sameFile(t, c.n1.Path("src.bin"), c.n2.Path("data/ok.bin"))
	wantEntries(t, c.n2.Path("data"), "ok.bin")
	wantEntries(t, c.n2.Path("etc"))
}

// TestNetnsTLSWrongNode: a daemon at node2's address presenting node1's
// (valid) certificate is refused by a node sending to it and by the CLI,
// with Unavailable naming both identities.
func TestNetnsTLSWrongNode(t *testing.T) {
	c := newTLSCluster(t)
	writeRandom(t, c.n1.Path("src.bin"), 64<<10)
	impostor := startDaemon(t, daemonConfig{NS: c.NS2, ID: "node1", Listen: c.IP2 + ":7480", DataListen: c.IP2 + ":7481",
		Extra: tlsServeArgs(c.dir, "node1")})
	meant := fmt.Sprintf("the node at %s presented node node1 (spiffe://lab.test/node/node1), but node %s was meant", c.IP2, c.IP2)
	r := c.cp(t, c.NS1, c.as("client-ops"), c.n1.At("/src.bin"), impostor.At("/stolen.bin"))
	wantFailure(t, r, 1, meant, "(Unavailable)")
	wantEntries(t, impostor.Root)

	r = rxferIn(t, c.NS1, append(append([]string{"status"}, c.as("client-ops")...), impostor.Control)...)
	wantFailure(t, r, 1, meant, "(Unavailable)")

	// The real node2 still takes the copy.
	r = c.cp(t, c.NS1, c.as("client-ops"), c.n1.At("/src.bin"), c.n2.At("/ok.bin"))
	if r.Code != 0 {
		t.Fatalf("copy to the real node2:\n%s", r)
	}
}

var serialLine = regexp.MustCompile(`certificate serial ([0-9a-f]+)`)

// TestNetnsTLSRotation replaces every certificate, key and the CA (a new
// CA: `certs init --force`) while the daemons run. New connections must
// present and trust only the new ones: the CLI sees each node's new
// serial, copies with the new client certificate work both ways (which
// needs node1's new client certificate, node2's new CA, and node1's new CA
// for node2's new certificate), and the old client certificate is refused.
func TestNetnsTLSRotation(t *testing.T) {
	c := newTLSCluster(t)
	writeRandom(t, c.n1.Path("src.bin"), 1<<20)
	if r := c.cp(t, c.NS1, c.as("client-ops"), c.n1.At("/src.bin"), c.n2.At("/before.bin")); r.Code != 0 {
		t.Fatalf("copy before the rotation:\n%s", r)
	}
	oldDir := t.TempDir()
	for _, f := range []string{"ca.crt", "client-ops.crt", "client-ops.key"} {
		b, err := os.ReadFile(filepath.Join(c.dir, f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(oldDir, f), b)
	}

	certsInit(t, c.dir, c.netnsPair, "--force")

	for _, n := range []struct {
		id string
		d  *daemon
		ns string
	}{{"node1", c.n1, c.NS1}, {"node2", c.n2, c.NS2}} {
		want := certSerial(t, filepath.Join(c.dir, "node-"+n.id+".crt"))
		r := rxferIn(t, n.ns, append(append([]string{"status"}, c.as("client-ops")...), n.d.Control)...)
		m := serialLine.FindStringSubmatch(r.Stdout)
		if r.Code != 0 || m == nil || m[1] != want {
			t.Fatalf("%s after the rotation: want serial %s\n%s", n.id, want, r)
		}
	}
	pulled := t.TempDir()
	if r := c.cp(t, c.NS1, c.as("client-ops"), c.n1.At("/src.bin"), c.n2.At("/after.bin")); r.Code != 0 {
		t.Fatalf("push after the rotation:\n%s", r)
	}
	if r := c.cp(t, c.NS2, c.as("client-ops"), c.n1.At("/src.bin"), pulled+"/"); r.Code != 0 {
		t.Fatalf("pull after the rotation:\n%s", r)
	}
	sameFile(t, c.n1.Path("src.bin"), c.n2.Path("after.bin"))
	sameFile(t, c.n1.Path("src.bin"), filepath.Join(pulled, "src.bin"))

	old := []string{"--tls-ca", filepath.Join(c.dir, "ca.crt"), // the new CA verifies the node; the old client certificate is refused
		"--tls-cert", filepath.Join(oldDir, "client-ops.crt"), "--tls-key", filepath.Join(oldDir, "client-ops.key")}
	r := c.cp(t, c.NS1, old, c.n1.At("/src.bin"), c.n2.At("/old.bin"))
	wantFailure(t, r, 1, "client certificate refused: certificate not signed by a trusted CA", "(Unauthenticated)")
	wantEntries(t, c.n2.Root, "before.bin", "after.bin")
}

// certSerial is the serial number of the PEM certificate in file, in hex.
func certSerial(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", c.SerialNumber)
}

// TestServeTLSRefusals: serve exits 2, naming the problem, for a --node-id
// its certificate disagrees with, a client certificate, a policy with an
// unknown key, and a non-loopback address with TLS but no client CA or token.
func TestServeTLSRefusals(t *testing.T) {
	requireBinary(t)
	dir := t.TempDir()
	if r := rxfer(t, "certs", "init", "--dir", dir, "--trust-domain", tlsTrustDomain, "--nodes", "node1", "--clients", "ops"); r.Code != 0 {
		t.Fatalf("certs init:\n%s", r)
	}
	if r := rxfer(t, "certs", "init", "--dir", dir, "--trust-domain", tlsTrustDomain, "--nodes", "node1"); r.Code != 2 || !strings.Contains(r.Stderr, "pass --force") {
		t.Fatalf("certs init over existing files:\n%s", r)
	}
	badPolicy := filepath.Join(dir, "bad.toml")
	writeFile(t, badPolicy, []byte("[[allow]]\nidentities = [\"*\"]\nwrite = [\"/\"]\nexecute = true\n"))
	base := []string{"serve", "--root", t.TempDir(), "--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"node-id disagrees", append(tlsServeArgs(dir, "node1"), "--node-id", "node2"),
			"--node-id node2 disagrees with --tls-cert " + filepath.Join(dir, "node-node1.crt") + ", which names node node1 (spiffe://lab.test/node/node1)"},
		{"client certificate", []string{"--tls-cert", filepath.Join(dir, "client-ops.crt"), "--tls-key", filepath.Join(dir, "client-ops.key")},
			"names client ops (spiffe://lab.test/client/ops): a node serves with a node certificate"},
		{"unknown policy key", append(tlsServeArgs(dir, "node1"), "--authz", badPolicy), `unknown key "allow.execute"`},
		{"policy without client CA", []string{"--tls-cert", filepath.Join(dir, "node-node1.crt"), "--tls-key", filepath.Join(dir, "node-node1.key"), "--authz", badPolicy},
			"--authz judges certificate identities: it needs --tls-client-ca"},
		{"server-only TLS on a non-loopback address", []string{"--tls-cert", filepath.Join(dir, "node-node1.crt"), "--tls-key", filepath.Join(dir, "node-node1.key"), "--listen", "192.0.2.1:0"},
			"is not a loopback address and there is no authentication"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rxfer(t, append(append([]string{}, base...), tt.args...)...)
			if r.Code != 2 || !strings.Contains(r.Stderr, tt.want) {
				t.Fatalf("want exit 2 and %q\n%s", tt.want, r)
			}
		})
	}
}
