package main

// The RDMA benchmark (make bench-rdma): in one testbed run, ib_write_bw at
// 1 MiB messages on rxe0 — before and after — and rxfer copies between real
// daemons on the same device: region→region (straight into the destination
// region) and file→file (partial file, verify, fsync, rename). Across two
// VMs the same, vm1 pulling from vm0. Each rxfer figure is the median of
// three copies after one warm-up, timed by the daemon from the request to
// the commit (TransferResult.seconds: setup, RDMA, verification and commit
// included). Skipped unless RXFER_RDMA_BENCH=1.
//
//	RXFER_RDMA_BENCH_MIB   bytes per copy in MiB (default 256 with one VM, 128 with two)
//	RXFER_BENCH_SERVE_ARGS more `rxfer serve` flags, for tuning runs

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/internal/testbedenv"
)

const mib = 1 << 20

// rdmaBench is one BENCH line: rates in MiB/s (ib_write_bw's MB/sec is
// 2^20 bytes per second) and rxfer's ratios to the mean of both baselines.
type rdmaBench struct {
	VMs            int       `json:"vms"`
	Bytes          int64     `json:"bytes"`
	IBWriteBW      []float64 `json:"ib_write_bw_mib_s"` // before, after
	Region         float64   `json:"region_to_region_mib_s"`
	File           float64   `json:"file_to_file_mib_s"`
	RegionRatio    float64   `json:"region_ratio"`
	FileRatio      float64   `json:"file_ratio"`
	RegionRuns     []float64 `json:"region_runs_mib_s"`
	FileRuns       []float64 `json:"file_runs_mib_s"`
	ServeArguments []string  `json:"serve_args,omitempty"`
}

func (b *rdmaBench) finish(t *testing.T) {
	base := (b.IBWriteBW[0] + b.IBWriteBW[1]) / 2
	b.Region, b.File = median(slices.Clone(b.RegionRuns)), median(slices.Clone(b.FileRuns))
	b.RegionRatio, b.FileRatio = b.Region/base, b.File/base
	line, _ := json.Marshal(b)
	t.Logf("ib_write_bw (1 MiB messages): %.1f MiB/s before, %.1f after", b.IBWriteBW[0], b.IBWriteBW[1])
	t.Logf("rxfer region→region: %.1f MiB/s = %.2fx ib_write_bw; file→file: %.1f MiB/s = %.2fx ib_write_bw",
		b.Region, b.RegionRatio, b.File, b.FileRatio)
	t.Logf("BENCH %s", line)
}

func benchSetup(t *testing.T, defMiB int64) (size int64, serveArgs []string) {
	if os.Getenv("RXFER_RDMA_BENCH") != "1" {
		t.Skip("benchmark skipped: make bench-rdma sets RXFER_RDMA_BENCH=1")
	}
	requireRDMA(t)
	size = defMiB * mib
	if v := os.Getenv("RXFER_RDMA_BENCH_MIB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("RXFER_RDMA_BENCH_MIB=%q: want a positive number of MiB", v)
		}
		size = n * mib
	}
	return size, strings.Fields(os.Getenv("RXFER_BENCH_SERVE_ARGS"))
}

// ibWriteBW runs ib_write_bw (1 MiB messages, size bytes) against server,
// starting the server here too when local is set, and returns the client's
// average in MiB/s.
func ibWriteBW(t *testing.T, server string, size int64, local bool) float64 {
	t.Helper()
	args := []string{"-d", rxeDevice, "-x", "1", "-F", "-s", strconv.Itoa(mib), "-n", strconv.FormatInt(size/mib, 10)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c0 := readCPU(t)
	defer func() { t.Logf("ib_write_bw: %s", cpuSince(t, c0)) }()
	var srv *exec.Cmd
	if local {
		srv = exec.CommandContext(ctx, "ib_write_bw", args...)
		if err := srv.Start(); err != nil {
			t.Fatalf("ib_write_bw server: %v", err)
		}
		defer srv.Wait()
	}
	// The server prints nothing once it listens: retry the client until
	// it is there (as testbed/guest/setup.sh does).
	for attempt := 1; ; attempt++ {
		out, err := exec.CommandContext(ctx, "ib_write_bw", append(args, server)...).CombinedOutput()
		if err == nil {
			return parseIBWriteBW(t, string(out))
		}
		if attempt == 40 || ctx.Err() != nil {
			t.Fatalf("ib_write_bw client to %s: %v\n%s", server, err, out)
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// parseIBWriteBW reads the BW average column of the 1 MiB line.
func parseIBWriteBW(t *testing.T, out string) float64 {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == strconv.Itoa(mib) {
			v, err := strconv.ParseFloat(f[3], 64)
			if err == nil && v > 0 {
				return v
			}
		}
	}
	t.Fatalf("no 1 MiB result in ib_write_bw's output:\n%s", out)
	return 0
}

// cpuTimes is the aggregate line of /proc/stat: user, nice, system, idle,
// iowait, irq, softirq (clock ticks).
type cpuTimes [7]float64

func readCPU(t *testing.T) cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	var c cpuTimes
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	for i := range c {
		c[i], _ = strconv.ParseFloat(f[i+1], 64)
	}
	return c
}

// cpuSince describes where the VM's CPU time went since c0, as shares of all
// vCPUs: what a run left idle is headroom the transfer did not use.
func cpuSince(t *testing.T, c0 cpuTimes) string {
	c1 := readCPU(t)
	var total float64
	for i := range c1 {
		total += c1[i] - c0[i]
	}
	pct := func(i int) float64 { return 100 * (c1[i] - c0[i]) / total }
	return fmt.Sprintf("cpu user %.0f%% sys %.0f%% softirq %.0f%% idle %.0f%%", pct(0)+pct(1), pct(2)+pct(5), pct(6), pct(3)+pct(4))
}

// timedCopy runs `rxfer cp --json --transport rdma args...` and returns the
// daemon-measured rate in MiB/s; the copy must have stayed on RDMA.
func timedCopy(t *testing.T, size int64, args ...string) float64 {
	t.Helper()
	c0 := readCPU(t)
	last, r := copyJSON(t, append([]string{"--transport", "rdma"}, args...)...)
	t.Logf("%s", cpuSince(t, c0))
	if last.Transport != pb.Transport_TRANSPORT_RDMA || last.FallbackReason != "" {
		t.Fatalf("transport %v, fallback_reason %q; want TRANSPORT_RDMA\n%s", last.Transport, last.FallbackReason, r)
	}
	secs := last.GetResult().GetSeconds()
	if secs <= 0 {
		t.Fatalf("no result.seconds in the final event\n%s", r)
	}
	return float64(size) / mib / secs
}

// benchCopies runs one warm-up and three timed copies of each kind; src
// and dst name the two daemons' control addresses.
func benchCopies(t *testing.T, b *rdmaBench, srcCtl, dstCtl string) {
	run := func(args ...string) {
		if r := rxfer(t, args...); r.Code != 0 {
			t.Fatalf("rxfer %v failed:\n%s", args, r)
		}
	}
	sz := strconv.FormatInt(b.Bytes, 10)
	run("regions", srcCtl, "add", "bench-src", sz)
	run("regions", dstCtl, "add", "bench-dst", sz)
	run("cp", "--transport", "rdma", srcCtl+":/bench.bin", srcCtl+":@bench-src")
	for i := range 4 {
		r := timedCopy(t, b.Bytes, srcCtl+":@bench-src", dstCtl+":@bench-dst")
		t.Logf("region→region %d: %.1f MiB/s", i, r)
		if i > 0 {
			b.RegionRuns = append(b.RegionRuns, r)
		}
	}
	for i := range 4 {
		r := timedCopy(t, b.Bytes, "--force", srcCtl+":/bench.bin", dstCtl+":/bench.bin")
		t.Logf("file→file %d: %.1f MiB/s", i, r)
		if i > 0 {
			b.FileRuns = append(b.FileRuns, r)
		}
	}
	run("regions", srcCtl, "rm", "bench-src")
	run("regions", dstCtl, "rm", "bench-dst")
}

// TestRDMABench: one VM, two daemons on rxe0.
func TestRDMABench(t *testing.T) {
	size, extra := benchSetup(t, 256)
	if os.Getenv("RXFER_VM_COUNT") == "2" {
		t.Skip("the one-VM benchmark runs with one VM")
	}
	a := startDaemon(t, daemonConfig{ID: "bench-a", Extra: extra})
	b := startDaemon(t, daemonConfig{ID: "bench-b", Extra: extra})
	writeRandom(t, a.Path("bench.bin"), size)
	res := &rdmaBench{VMs: 1, Bytes: size, ServeArguments: extra}
	res.IBWriteBW = append(res.IBWriteBW, ibWriteBW(t, "127.0.0.1", size, true))
	benchCopies(t, res, a.Control, b.Control)
	sameFile(t, a.Path("bench.bin"), b.Path("bench.bin"))
	res.IBWriteBW = append(res.IBWriteBW, ibWriteBW(t, "127.0.0.1", size, true))
	res.finish(t)
}

// TestRDMABenchTwoVM: vm0 serves bench.bin and runs the ib_write_bw
// servers; vm1 runs the clients and pulls. They step together over a
// plain TCP connection: vm1 writes "bw" (vm0 answers "ready" once its
// ib_write_bw server started) or "done".
func TestRDMABenchTwoVM(t *testing.T) {
	size, extra := benchSetup(t, 128)
	if os.Getenv("RXFER_VM_COUNT") != "2" {
		t.Skip("needs two testbed VMs: make bench-rdma runs it with -vms 2")
	}
	self, peer := os.Getenv("RXFER_VM_IP"), os.Getenv("RXFER_PEER_IP")
	cfg := daemonConfig{Listen: net.JoinHostPort(self, twoVMCtlPort), DataListen: net.JoinHostPort(self, twoVMDataPort), Extra: extra}
	switch os.Getenv("RXFER_VM_INDEX") {
	case "0":
		cfg.ID = "vm0"
		d := startDaemon(t, cfg)
		writeRandom(t, d.Path("bench.bin"), size)
		conn := testbedenv.TwoVMConnect(t, twoVMSyncPort, true)
		defer conn.Close()
		in := bufio.NewScanner(conn)
		for in.Scan() {
			switch in.Text() {
			case "bw":
				args := []string{"-d", rxeDevice, "-x", "1", "-F", "-s", strconv.Itoa(mib), "-n", strconv.FormatInt(size/mib, 10)}
				out, err := exec.Command("ib_write_bw", args...).CombinedOutput()
				if err != nil {
					t.Fatalf("ib_write_bw server: %v\n%s", err, out)
				}
				fmt.Fprintln(conn, "served")
			case "crc":
				fmt.Fprintf(conn, "%d\n", fileCRC(t, d.Path("bench.bin")))
			case "done":
				return
			}
		}
		t.Fatalf("vm1 hung up without \"done\": %v", in.Err())
	case "1":
		cfg.ID = "vm1"
		d := startDaemon(t, cfg)
		conn := testbedenv.TwoVMConnect(t, twoVMSyncPort, false)
		defer conn.Close()
		defer fmt.Fprintln(conn, "done")
		in := bufio.NewScanner(conn)
		ask := func(cmd string) string {
			fmt.Fprintln(conn, cmd)
			if !in.Scan() {
				t.Fatalf("vm0 hung up after %q: %v", cmd, in.Err())
			}
			return in.Text()
		}
		peerCtl := net.JoinHostPort(peer, twoVMCtlPort)
		res := &rdmaBench{VMs: 2, Bytes: size, ServeArguments: extra}
		bw := func() {
			// vm0's server starts when it reads "bw"; the client retries until it listens.
			fmt.Fprintln(conn, "bw")
			res.IBWriteBW = append(res.IBWriteBW, ibWriteBW(t, peer, size, false))
			if !in.Scan() || in.Text() != "served" {
				t.Fatalf("vm0's ib_write_bw server did not finish: %q %v", in.Text(), in.Err())
			}
		}
		bw()
		benchCopies(t, res, peerCtl, d.Control)
		if got, want := fileCRC(t, d.Path("bench.bin")), ask("crc"); strconv.FormatUint(uint64(got), 10) != want {
			t.Errorf("bench.bin at vm1 has CRC32C %d, vm0's has %s", got, want)
		}
		bw()
		res.finish(t)
	default:
		t.Fatalf("RXFER_VM_INDEX=%q, want 0 or 1", os.Getenv("RXFER_VM_INDEX"))
	}
}
