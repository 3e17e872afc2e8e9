package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustCA(t *testing.T, td string) *CA {
	t.Helper()
	ca, err := NewCA(td, ValidFor(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestFromCertificate(t *testing.T) {
	u := func(s string) []*url.URL {
		p, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return []*url.URL{p}
	}
	tests := []struct {
		name    string
		cert    x509.Certificate
		want    Identity
		wantErr string
	}{
		{"node URI", x509.Certificate{URIs: u("spiffe://lab/node/a"), DNSNames: []string{"other"}}, Identity{KindNode, "a", "lab"}, ""},
		{"client URI", x509.Certificate{URIs: u("spiffe://Lab.Example/client/ops")}, Identity{KindClient, "ops", "lab.example"}, ""},
		{"DNS SAN is a node", x509.Certificate{DNSNames: []string{"Node-B.example"}}, Identity{KindNode, "node-b.example", ""}, ""},
		{"non-spiffe URI ignored", x509.Certificate{URIs: u("https://x/node/a"), DNSNames: []string{"b"}}, Identity{KindNode, "b", ""}, ""},
		{"neither", x509.Certificate{}, Identity{}, "neither a URI SAN"},
		{"unknown kind", x509.Certificate{URIs: u("spiffe://lab/admin/a")}, Identity{}, `"admin": want node or client`},
		{"nested path", x509.Certificate{URIs: u("spiffe://lab/node/a/b")}, Identity{}, "node name"},
		{"empty name", x509.Certificate{URIs: u("spiffe://lab/client/")}, Identity{}, "client name"},
		{"no path", x509.Certificate{URIs: u("spiffe://lab")}, Identity{}, "want spiffe://"},
		{"query", x509.Certificate{URIs: u("spiffe://lab/node/a?x=1")}, Identity{}, "no port, user, query"},
		{"two identities", x509.Certificate{URIs: append(u("spiffe://lab/node/a"), u("spiffe://lab/client/b")...)}, Identity{}, "2 spiffe:// URI SANs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromCertificate(&tt.cert)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrNoIdentity) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want an ErrNoIdentity error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestInitFiles(t *testing.T) {
	dir := t.TempDir()
	opt := InitOptions{Dir: dir, TrustDomain: "lab", Nodes: []Node{{ID: "a", Hosts: []string{"10.0.0.1"}}, {ID: "b"}},
		Clients: []string{"ops"}, Validity: ValidFor(time.Hour)}
	files, err := Init(opt)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ca.crt", "ca.key", "node-a.crt", "node-a.key", "node-b.crt", "node-b.key", "client-ops.crt", "client-ops.key"}
	if len(files) != len(want) {
		t.Fatalf("wrote %v, want %v", files, want)
	}
	for i, f := range files {
		if filepath.Base(f) != want[i] {
			t.Fatalf("file %d is %s, want %s", i, f, want[i])
		}
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if wantMode := os.FileMode(0o644); strings.HasSuffix(f, ".key") && st.Mode().Perm() != 0o600 || !strings.HasSuffix(f, ".key") && st.Mode().Perm() != wantMode {
			t.Errorf("%s has mode %v", f, st.Mode().Perm())
		}
	}
	ca, err := LoadCAPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := LoadKeyPair(filepath.Join(dir, "node-a.crt"), filepath.Join(dir, "node-a.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, id := a.Current()
	if id != (Identity{KindNode, "a", "lab"}) || leaf.Leaf.DNSNames[0] != "a" || !leaf.Leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("node-a: identity %v, DNS %v, IP %v", id, leaf.Leaf.DNSNames, leaf.Leaf.IPAddresses)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := ca.Verify([]*x509.Certificate{leaf.Leaf}, u); err != nil {
			t.Errorf("node cert for usage %v: %v", u, err)
		}
	}
	ops, err := LoadKeyPair(filepath.Join(dir, "client-ops.crt"), filepath.Join(dir, "client-ops.key"))
	if err != nil {
		t.Fatal(err)
	}
	oc, oid := ops.Current()
	if oid != (Identity{KindClient, "ops", "lab"}) {
		t.Errorf("client identity %v", oid)
	}
	if _, err := ca.Verify([]*x509.Certificate{oc.Leaf}, x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "not for serving") {
		t.Errorf("a client certificate used to serve: %v", err)
	}

	// A second init refuses and leaves every file as it was.
	before, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if _, err := Init(opt); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second init: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(after) != string(before) {
		t.Fatal("a refused init changed ca.crt")
	}
	opt.Force = true
	if _, err := Init(opt); err != nil {
		t.Fatalf("init --force: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(after) == string(before) {
		t.Fatal("init --force kept the old CA")
	}
}

func TestVerifyRefusals(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "lab")
	other := mustCA(t, "lab")
	writeCA(t, dir, ca)
	pool, err := LoadCAPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ops := Identity{KindClient, "ops", "lab"}
	issue := func(ca *CA, v Validity) *x509.Certificate {
		c, _, err := ca.Issue(ops, nil, v)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now()
	tests := []struct {
		name  string
		chain []*x509.Certificate
		want  error
		msg   string
	}{
		{"none", nil, ErrNoCertificate, "no certificate"},
		{"other CA", []*x509.Certificate{issue(other, ValidFor(time.Hour))}, ErrUntrusted, "which is not in " + filepath.Join(dir, "ca.crt")},
		{"expired", []*x509.Certificate{issue(ca, Validity{now.Add(-2 * time.Hour), now.Add(-time.Hour)})}, ErrExpired, "client ops (spiffe://lab/client/ops)"},
		{"not yet valid", []*x509.Certificate{issue(ca, Validity{now.Add(time.Hour), now.Add(2 * time.Hour)})}, ErrExpired, "is not valid before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pool.Verify(tt.chain, x509.ExtKeyUsageClientAuth)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v; want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
	if id, err := pool.Verify([]*x509.Certificate{issue(ca, ValidFor(time.Hour))}, x509.ExtKeyUsageClientAuth); err != nil || id != ops {
		t.Fatalf("a good certificate: %v, %v", id, err)
	}
}

func writeCA(t *testing.T, dir string, ca *CA) {
	t.Helper()
	if err := WriteFileAtomic(filepath.Join(dir, "ca.crt"), CertPEM(ca.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writePair(t *testing.T, dir, base string, ca *CA, id Identity, hosts ...string) *x509.Certificate {
	t.Helper()
	c, k, err := ca.Issue(id, hosts, ValidFor(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := KeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	// The key first, then the certificate: between the two the pair does
	// not match, which a reload must survive.
	if err := WriteFileAtomic(filepath.Join(dir, base+".key"), kp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, base+".crt"), CertPEM(c), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestReload: replacing the files changes what the next handshake
// presents and trusts; a mismatched half-replaced pair and a certificate
// that Check refuses keep the previous pair.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "lab")
	writeCA(t, dir, ca)
	node := Identity{KindNode, "a", "lab"}
	first := writePair(t, dir, "node", ca, node)
	kp, err := LoadKeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	var reloadErrs []error
	kp.Check = func(id Identity) error {
		if id != node {
			return errors.New("names " + id.String())
		}
		return nil
	}
	kp.OnReload = func(_ Identity, _ *x509.Certificate, err error) { reloadErrs = append(reloadErrs, err) }
	if c, _ := kp.Current(); c.Leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("not the first certificate")
	}
	second := writePair(t, dir, "node", ca, node)
	if c, _ := kp.Current(); c.Leaf.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after rotation: serial %x, want %x", c.Leaf.SerialNumber, second.SerialNumber)
	}
	// Half a rotation: a new key beside the old certificate.
	_, k, _ := ca.Issue(node, nil, ValidFor(time.Hour))
	kpem, _ := KeyPEM(k)
	if err := WriteFileAtomic(filepath.Join(dir, "node.key"), kpem, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, _ := kp.Current(); c.Leaf.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatal("a mismatched pair replaced the working one")
	}
	// A certificate naming another node is refused by Check.
	writePair(t, dir, "node", ca, Identity{KindNode, "b", "lab"})
	if c, id := kp.Current(); c.Leaf.SerialNumber.Cmp(second.SerialNumber) != 0 || id != node {
		t.Fatalf("a certificate for another node was taken: %v", id)
	}
	if n := len(reloadErrs); n < 3 || reloadErrs[n-1] == nil || !strings.Contains(reloadErrs[n-1].Error(), "names node b") {
		t.Fatalf("reload reports: %v", reloadErrs)
	}
	third := writePair(t, dir, "node", ca, node)
	if c, _ := kp.Current(); c.Leaf.SerialNumber.Cmp(third.SerialNumber) != 0 {
		t.Fatal("a good pair after a refused one was not taken")
	}

	// The CA file: a new CA replaces the old one for the next verification.
	pool, err := LoadCAPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Verify([]*x509.Certificate{third}, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatal(err)
	}
	ca2 := mustCA(t, "lab")
	writeCA(t, dir, ca2)
	if _, err := pool.Verify([]*x509.Certificate{third}, x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("old CA's certificate after the CA file was replaced: %v", err)
	}
}

// TestClientConfig runs real TLS 1.3 handshakes: the server certificate
// must name the host dialled, a pinned config takes only its certificate,
// and the server sees the client's current certificate.
func TestClientConfig(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "lab")
	writeCA(t, dir, ca)
	writePair(t, dir, "a", ca, Identity{KindNode, "a", "lab"}, "10.0.0.1")
	writePair(t, dir, "ops", ca, Identity{KindClient, "ops", "lab"})
	pool, _ := LoadCAPool(filepath.Join(dir, "ca.crt"))
	srvPair, _ := LoadKeyPair(filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key"))
	cliPair, _ := LoadKeyPair(filepath.Join(dir, "ops.crt"), filepath.Join(dir, "ops.key"))
	client := NewClient(pool, cliPair)
	handshake := func(ccfg, scfg *tls.Config) (tls.ConnectionState, error) {
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		srvState := make(chan tls.ConnectionState, 1)
		go func() {
			s := tls.Server(c2, scfg)
			s.Handshake()
			srvState <- s.ConnectionState()
			c2.Close() // not s.Close: a close_notify on a pipe nobody reads blocks
		}()
		err := tls.Client(c1, ccfg).Handshake()
		c1.Close()
		return <-srvState, err
	}
	scfg := ServerConfig(srvPair, true)
	for _, host := range []string{"a", "10.0.0.1"} {
		st, err := handshake(client.Config(host), scfg)
		if err != nil {
			t.Fatalf("dialling %s: %v", host, err)
		}
		if st.Version != tls.VersionTLS13 || len(st.PeerCertificates) == 0 {
			t.Fatalf("server state: version %x, %d client certificates", st.Version, len(st.PeerCertificates))
		}
		if id, err := pool.Verify(st.PeerCertificates, x509.ExtKeyUsageClientAuth); err != nil || id.Name != "ops" {
			t.Fatalf("server sees %v, %v", id, err)
		}
	}
	_, err := handshake(client.Config("b"), scfg)
	if !errors.Is(err, ErrWrongIdentity) || !strings.Contains(err.Error(), "presented node a (spiffe://lab/node/a), but node b was meant") {
		t.Fatalf("dialling b, answered by a: %v", err)
	}
	eph, err := Ephemeral()
	if err != nil {
		t.Fatal(err)
	}
	ephCfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{eph}}
	if _, err := handshake(client.PinnedConfig(Fingerprint(eph.Leaf)), ephCfg); err != nil {
		t.Fatalf("pinned: %v", err)
	}
	if _, err := handshake(client.PinnedConfig(Fingerprint(eph.Leaf)), scfg); !errors.Is(err, ErrWrongIdentity) {
		t.Fatalf("pinned, another certificate: %v", err)
	}
}

// TestGeneration: a Client's generation stays put while its files do, and
// changes when the certificate pair or the CA file is replaced, but not
// for a half-replaced pair that does not load.
func TestGeneration(t *testing.T) {
	dir := t.TempDir()
	ca := mustCA(t, "lab")
	writeCA(t, dir, ca)
	node := Identity{KindNode, "a", "lab"}
	writePair(t, dir, "node", ca, node)
	kp, err := LoadKeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := LoadCAPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(pool, kp)
	g0 := c.Generation()
	if g := c.Generation(); g != g0 {
		t.Fatalf("generation %d then %d with no file changed", g0, g)
	}
	_, k, _ := ca.Issue(node, nil, ValidFor(time.Hour))
	kpem, _ := KeyPEM(k)
	if err := WriteFileAtomic(filepath.Join(dir, "node.key"), kpem, 0o600); err != nil {
		t.Fatal(err)
	}
	if g := c.Generation(); g != g0 {
		t.Fatalf("a mismatched key changed the generation (%d to %d)", g0, g)
	}
	writePair(t, dir, "node", ca, node)
	g1 := c.Generation()
	if g1 == g0 {
		t.Fatal("a new certificate pair left the generation unchanged")
	}
	writeCA(t, dir, mustCA(t, "lab"))
	if g := c.Generation(); g == g1 {
		t.Fatal("a new CA file left the generation unchanged")
	}
}
