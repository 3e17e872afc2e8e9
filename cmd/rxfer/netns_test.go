package main

// Two-node tests across a real (virtual) link: one daemon in each of two
// network namespaces joined by a veth pair. Root only.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// netnsPair is two network namespaces joined by a veth pair.
type netnsPair struct {
	NS1, NS2 string
	IP1, IP2 string
}

var netnsSeq atomic.Int32

// newNetnsPair creates the namespaces (names and veth names carry the pid,
// the subnet is 10.231.X.0/24) and deletes them when the test ends, which
// also deletes the veth pair. It skips the test when that is not possible.
func newNetnsPair(t *testing.T) netnsPair {
	t.Helper()
	requireBinary(t)
	if os.Geteuid() != 0 {
		t.Skip("netns test skipped: creating network namespaces needs root")
	}
	seq, pid := netnsSeq.Add(1), os.Getpid()
	x := (pid*8+int(seq))%254 + 1
	p := netnsPair{
		NS1: fmt.Sprintf("rxfer-e2e-%d-%d-1", pid, seq), NS2: fmt.Sprintf("rxfer-e2e-%d-%d-2", pid, seq),
		IP1: fmt.Sprintf("10.231.%d.1", x), IP2: fmt.Sprintf("10.231.%d.2", x),
	}
	veth1, veth2 := fmt.Sprintf("rxv%d%da", pid, seq), fmt.Sprintf("rxv%d%db", pid, seq) // ≤ 15 bytes
	for _, ns := range []string{p.NS1, p.NS2} {
		if out, err := system("ip", "netns", "add", ns); err != nil {
			t.Skipf("netns test skipped: ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() {
			if out, err := system("ip", "netns", "del", ns); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	steps := [][]string{
		{"link", "add", veth1, "netns", p.NS1, "type", "veth", "peer", "name", veth2, "netns", p.NS2},
		{"-n", p.NS1, "addr", "add", p.IP1 + "/24", "dev", veth1},
		{"-n", p.NS2, "addr", "add", p.IP2 + "/24", "dev", veth2},
		{"-n", p.NS1, "link", "set", "lo", "up"},
		{"-n", p.NS2, "link", "set", "lo", "up"},
		{"-n", p.NS1, "link", "set", veth1, "up"},
		{"-n", p.NS2, "link", "set", veth2, "up"},
	}
	for _, args := range steps {
		if out, err := system("ip", args...); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return p
}

// startNetnsDaemons starts node1 in NS1 and node2 in NS2 on fixed ports.
func (p netnsPair) startDaemons(t *testing.T) (n1, n2 *daemon) {
	t.Helper()
	start := func(ns, ip, id string) *daemon {
		return startDaemon(t, daemonConfig{NS: ns, ID: id, // the namespaces' veth pair is the test's own network
			Listen: ip + ":7470", DataListen: ip + ":7471", Extra: []string{"--insecure"}})
	}
	return start(p.NS1, p.IP1, "node1"), start(p.NS2, p.IP2, "node2")
}

// netnsSize is the size of the netns copies: 64 MiB, or $RXFER_NETNS_SIZE
// (bytes, or with a K, M or G suffix for KiB, MiB, GiB).
func netnsSize(t *testing.T, def int64) int64 {
	t.Helper()
	s := os.Getenv("RXFER_NETNS_SIZE")
	if s == "" {
		return def
	}
	mult := int64(1)
	if i := strings.IndexAny(s, "KMGkmg"); i >= 0 && i == len(s)-1 {
		mult = 1 << (10 * (1 + strings.IndexByte("KMG", strings.ToUpper(s[i:])[0])))
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		t.Fatalf("RXFER_NETNS_SIZE=%q: want a byte count such as 1073741824 or 1G", os.Getenv("RXFER_NETNS_SIZE"))
	}
	return n * mult
}

func TestNetnsTwoNodes(t *testing.T) {
	p := newNetnsPair(t)
	n1, n2 := p.startDaemons(t)
	size := netnsSize(t, 64<<20)
	writeRandom(t, n1.Path("big.bin"), size)
	pulled := t.TempDir()

	tests := []struct {
		name, ns, src, dst string
		got                string // where the copy lands on this host
	}{
		{"push node1 to node2", p.NS1, n1.At("/big.bin"), n2.At("/pushed.bin"), n2.Path("pushed.bin")},
		{"pull node1 to CLI in ns2", p.NS2, n1.At("/big.bin"), pulled + "/", filepath.Join(pulled, "big.bin")},
		{"push CLI in ns1 to node2", p.NS1, n1.Path("big.bin"), n2.At("/from-cli.bin"), n2.Path("from-cli.bin")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustCopy(t, tt.ns, tt.src, tt.dst)
			t.Logf("%s: %s", tt.name, r.lastLine())
			sameFile(t, n1.Path("big.bin"), tt.got)
		})
	}
	wantEntries(t, n2.Root, "pushed.bin", "from-cli.bin")
	wantEntries(t, pulled, "big.bin")
}

// TestNetnsBench measures, on the same veth, iperf3 (plain and -Z) and a
// 1 GiB rxfer copy ($RXFER_NETNS_SIZE overrides), when RXFER_NETNS_BENCH=1.
func TestNetnsBench(t *testing.T) {
	if os.Getenv("RXFER_NETNS_BENCH") != "1" {
		t.Skip("benchmark skipped: set RXFER_NETNS_BENCH=1 to measure iperf3 and rxfer on a veth")
	}
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("benchmark skipped: iperf3 is not installed")
	}
	p := newNetnsPair(t)
	n1, n2 := p.startDaemons(t)
	iperfGbps := map[bool]float64{}
	for _, zerocopy := range []bool{false, true} {
		iperfGbps[zerocopy] = iperf3(t, p, zerocopy)
		t.Logf("iperf3 zerocopy=%v: %.2f Gbit/s", zerocopy, iperfGbps[zerocopy])
	}
	size := netnsSize(t, 1<<30)
	writeRandom(t, n1.Path("bench.bin"), size)
	r := rxferIn(t, p.NS1, "cp", "--json", n1.At("/bench.bin"), n2.At("/"))
	if r.Code != 0 {
		t.Fatalf("copy failed:\n%s", r)
	}
	var final struct {
		BytesTotal string `json:"bytes_total"`
		Result     struct {
			Seconds float64 `json:"seconds"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(r.lastLine()), &final); err != nil || final.Result.Seconds == 0 {
		t.Fatalf("no result in the last event %q: %v", r.lastLine(), err)
	}
	rxferGbps := float64(size) * 8 / final.Result.Seconds / 1e9
	// One line a machine can read, with the ratios measured in this run.
	t.Logf("BENCH {\"bytes\": %d, \"rxfer_gbps\": %.3f, \"iperf3_gbps\": %.3f, \"iperf3_z_gbps\": %.3f, \"ratio_vs_iperf3\": %.3f, \"ratio_vs_iperf3_z\": %.3f}",
		size, rxferGbps, iperfGbps[false], iperfGbps[true], rxferGbps/iperfGbps[false], rxferGbps/iperfGbps[true])
	t.Logf("rxfer to a disk root (default chunk size and streams, includes fsync): %.2f Gbit/s = %.2fx iperf3, %.2fx iperf3 -Z",
		rxferGbps, rxferGbps/iperfGbps[false], rxferGbps/iperfGbps[true])
	sameFile(t, n1.Path("bench.bin"), n2.Path("bench.bin"))

	// The same copy to a node whose root is in memory: the network path
	// without the destination disk.
	mem := startDaemon(t, daemonConfig{NS: p.NS2, ID: "node2-tmpfs", Root: mountTmpfs(t, fmt.Sprint(3*size+64<<20)),
		Listen: p.IP2 + ":7480", DataListen: p.IP2 + ":7481", Extra: []string{"--insecure"}})
	r = rxferIn(t, p.NS1, "cp", n1.At("/bench.bin"), mem.At("/"))
	if r.Code != 0 {
		t.Fatalf("copy to tmpfs failed:\n%s", r)
	}
	t.Logf("rxfer to a tmpfs root: %s", r.lastLine())
	sameFile(t, n1.Path("bench.bin"), mem.Path("bench.bin"))
	benchDataEncryption(t, p, n1, size, envRounds(3)) // encrypt_bench_test.go
	os.Remove(mem.Path("bench.bin"))

	// What resume's chunk journal costs (resume_bench_test.go).
	journalCost(t, p, n1, n2, "disk", size, 4)
	journalCost(t, p, n1, mem, "tmpfs", size, 4)
}

// iperf3 runs a one-off iperf3 server in NS2 and a 5 s client from NS1 and
// returns the received rate in Gbit/s.
func iperf3(t *testing.T, p netnsPair, zerocopy bool) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", p.NS2, "iperf3", "-s", "-1", "-B", p.IP2, "--forceflush")
	out, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Wait()
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.Contains(sc.Text(), "Server listening") {
	}
	go func() {
		for sc.Scan() { // drain until the server exits
		}
	}()
	args := []string{"netns", "exec", p.NS1, "iperf3", "-c", p.IP2, "-t", "5", "-J"}
	if zerocopy {
		args = append(args, "-Z")
	}
	b, err := exec.CommandContext(ctx, "ip", args...).Output()
	if err != nil {
		t.Fatalf("iperf3 client: %v: %s", err, b)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("iperf3 -J output: %v", err)
	}
	return res.End.SumReceived.BitsPerSecond / 1e9
}
