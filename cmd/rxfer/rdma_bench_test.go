package main

// The RDMA benchmark (make bench-rdma): in one testbed run, ib_write_bw on
// rxe0 (at 1 MiB messages over one queue pair, and shaped like rxfer's
// transfers: as many queue pairs as lanes, in messages of its chunk size;
// the fastest is the baseline) and rxfer copies between real
// daemons on the same device: region→region (straight into the destination
// region) and file→file (partial file, verify, fsync, rename). Across two
// VMs the same, vm1 pulling from vm0. A copy is timed by the daemon from the
// request to the commit (TransferResult.seconds: setup, RDMA, verification
// and commit included) and, separately, its moving phase alone (the span
// ib_write_bw's figure covers); see rdmaBench for the rounds. Skipped unless
// RXFER_RDMA_BENCH=1.
//
//	RXFER_RDMA_BENCH_MIB   bytes per copy in MiB (default 128 with one VM, 64 with two)
//	RXFER_BENCH_SERVE_ARGS more `rxfer serve` flags, for tuning runs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/rxfer/rxfer/transfer"
)

const mib = 1 << 20

// rdmaBench is one BENCH line. Rates are in MiB/s (ib_write_bw's MB/sec
// is 2^20 bytes per second). The emulated testbed drifts by ±20% within a
// run, so each round measures ib_write_bw, then region→region, then
// file→file, back to back, and a round's ratios are to its own baseline;
// the reported ratio is the median over the rounds.
type rdmaBench struct {
	VMs         int       `json:"vms"`
	Bytes       int64     `json:"bytes"`
	IBWriteBW   []float64 `json:"ib_write_bw_mib_s"`
	RegionRuns  []float64 `json:"region_mib_s"`
	FileRuns    []float64 `json:"file_mib_s"`
	RegionRatio float64   `json:"region_ratio"`
	FileRatio   float64   `json:"file_ratio"`
	// The same for the moving phase alone (from the destination's Prepare
	// answer to the last chunk verified): no setup, fsync or rename.
	RegionMoving      []float64 `json:"region_moving_mib_s"`
	FileMoving        []float64 `json:"file_moving_mib_s"`
	RegionMovingRatio float64   `json:"region_moving_ratio"`
	FileMovingRatio   float64   `json:"file_moving_ratio"`
	ServeArguments    []string  `json:"serve_args,omitempty"`
	// file→file with --verify mac (the whole-file keyed BLAKE3) in the same
	// rounds, and its median ratio to file→file without it (one VM).
	FileMACRuns  []float64 `json:"file_mac_mib_s,omitempty"`
	FileMACRatio float64   `json:"file_mac_ratio_vs_file,omitempty"`
}

// benchRounds is the number of measured rounds, after one warm-up copy of each kind.
const benchRounds = 5

func (b *rdmaBench) finish(t *testing.T) {
	ratio := func(runs []float64) float64 {
		var r []float64
		for i, base := range b.IBWriteBW {
			r = append(r, runs[i]/base)
		}
		return median(r)
	}
	b.RegionRatio, b.FileRatio = ratio(b.RegionRuns), ratio(b.FileRuns)
	b.RegionMovingRatio, b.FileMovingRatio = ratio(b.RegionMoving), ratio(b.FileMoving)
	if len(b.FileMACRuns) == len(b.FileRuns) && len(b.FileRuns) > 0 {
		var r []float64
		for i, f := range b.FileRuns {
			r = append(r, b.FileMACRuns[i]/f)
		}
		b.FileMACRatio = median(r)
		t.Logf("file→file with --verify mac: %.1f MiB/s, %.2fx file→file without it (median of the per-round ratios)", median(slices.Clone(b.FileMACRuns)), b.FileMACRatio)
	}
	line, _ := json.Marshal(b)
	t.Logf("ib_write_bw (the best shape each round), median of %d rounds: %.1f MiB/s", len(b.IBWriteBW), median(slices.Clone(b.IBWriteBW)))
	t.Logf("rxfer request to commit: region→region %.1f MiB/s, %.2fx ib_write_bw; file→file %.1f MiB/s, %.2fx ib_write_bw (medians of the per-round ratios)",
		median(slices.Clone(b.RegionRuns)), b.RegionRatio, median(slices.Clone(b.FileRuns)), b.FileRatio)
	t.Logf("rxfer moving phase only: region→region %.1f MiB/s, %.2fx; file→file %.1f MiB/s, %.2fx",
		median(slices.Clone(b.RegionMoving)), b.RegionMovingRatio, median(slices.Clone(b.FileMoving)), b.FileMovingRatio)
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

// ibShape is how ib_write_bw moves the bytes: over qps queue pairs, in
// messages of msg bytes.
type ibShape struct {
	qps int
	msg int64
}

func (s ibShape) String() string { return fmt.Sprintf("%d QP, %d KiB messages", s.qps, s.msg>>10) }

// ibWriteBW runs ib_write_bw (size bytes in all, shaped as s) against
// server, starting the server here too when local is set, and returns the
// client's average in MiB/s. A run that ends with status 0 but no result
// line (rxe gave up retrying, under load) is run again with a new server
// when the server is local; with a remote one it returns 0 and the caller
// starts another server.
func ibWriteBW(t *testing.T, server string, size int64, s ibShape, local bool) float64 {
	t.Helper()
	args := ibWriteBWArgs(size, s)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c0, n0 := readCPU(t), rxeCounters(t)
	defer func() { t.Logf("ib_write_bw: %s; %s", cpuSince(t, c0), countersSince(t, n0)) }()
	var srv *exec.Cmd
	if local {
		srv = exec.CommandContext(ctx, "ib_write_bw", args...)
		if err := srv.Start(); err != nil {
			t.Fatalf("ib_write_bw server: %v", err)
		}
		defer func() { srv.Wait() }()
	}
	// The server prints nothing once it listens: retry the client until
	// it is there (as testbed/guest/setup.sh does).
	for attempt := 1; ; attempt++ {
		out, err := exec.CommandContext(ctx, "ib_write_bw", append(args, server)...).CombinedOutput()
		if err == nil {
			if v, ok := ibWriteBWResult(string(out), s.msg); ok {
				return v
			}
			err = errors.New("no result line")
			if !local {
				t.Logf("ib_write_bw client to %s ended without a result; the server must start again:\n%s", server, out)
				return 0
			}
			{ // the server ended with the client: start another
				srv.Wait()
				srv = exec.CommandContext(ctx, "ib_write_bw", args...)
				if err := srv.Start(); err != nil {
					t.Fatalf("ib_write_bw server: %v", err)
				}
			}
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

// ibWriteBWArgs: rxe0, GID index 1 (RoCE v2 IPv4), size bytes in all,
// shaped as s (-n counts per queue pair).
func ibWriteBWArgs(size int64, s ibShape) []string {
	return []string{"-d", rxeDevice, "-x", "1", "-F", "-s", strconv.FormatInt(s.msg, 10), "-q", strconv.Itoa(s.qps),
		"-n", strconv.FormatInt(max(1, size/s.msg/int64(s.qps)), 10)}
}

// baselineShapes are the ways ib_write_bw runs each round; the baseline is
// the fastest. The targets are set against one queue pair at 1 MiB messages;
// rxfer stripes a transfer over lanes queue pairs in chunks of its own
// size, so ib_write_bw gets to do the same.
func baselineShapes(serveArgs []string) []ibShape {
	lanes, chunk := transfer.DefaultLanes(), int64(transfer.DefaultRDMAChunk)
	for i, a := range serveArgs {
		name, v, ok := strings.Cut(a, "=")
		if !ok && i+1 < len(serveArgs) {
			v = serveArgs[i+1]
		}
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil:
		case name == "--rdma-lanes":
			lanes = int(n)
		case name == "--rdma-chunk-size":
			chunk = n
		}
	}
	shapes := []ibShape{{1, mib}}
	for _, s := range []ibShape{{lanes, mib}, {lanes, chunk}} {
		if !slices.Contains(shapes, s) {
			shapes = append(shapes, s)
		}
	}
	return shapes
}

// bestBaseline runs bw in each shape and returns the highest rate.
func bestBaseline(t *testing.T, shapes []ibShape, bw func(ibShape) float64) float64 {
	best, runs := 0.0, make([]string, len(shapes))
	for i, s := range shapes {
		v := bw(s)
		best, runs[i] = max(best, v), fmt.Sprintf("%.1f MiB/s over %s", v, s)
	}
	if len(shapes) > 1 {
		t.Logf("ib_write_bw: %s; the baseline is the highest", strings.Join(runs, ", "))
	}
	return best
}

// ibWriteBWResult reads the BW average column of the line for msg-byte messages.
func ibWriteBWResult(out string, msg int64) (float64, bool) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == strconv.FormatInt(msg, 10) {
			v, err := strconv.ParseFloat(f[3], 64)
			if err == nil && v > 0 {
				return v, true
			}
		}
	}
	return 0, false
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

// rxeCounters reads the hardware counters of rxe0 port 1 (rdma statistic).
func rxeCounters(t *testing.T) map[string]int64 {
	out, err := exec.Command("rdma", "statistic", "show", "link", rxeDevice+"/1").CombinedOutput()
	if err != nil {
		t.Fatalf("rdma statistic show: %v\n%s", err, out)
	}
	f := strings.Fields(string(out))
	m := map[string]int64{}
	for i := 2; i+1 < len(f); i += 2 {
		if v, err := strconv.ParseInt(f[i+1], 10, 64); err == nil {
			m[f[i]] = v
		}
	}
	return m
}

// countersSince names the rxe counters that moved since c0, except the
// packet counts: retries, duplicates and sequence errors are what cost a
// run its speed.
func countersSince(t *testing.T, c0 map[string]int64) string {
	var moved []string
	for k, v := range rxeCounters(t) {
		if d := v - c0[k]; d != 0 && k != "sent_pkts" && k != "rcvd_pkts" {
			moved = append(moved, fmt.Sprintf("%s +%d", k, d))
		}
	}
	slices.Sort(moved)
	if len(moved) == 0 {
		return "rxe0: no retries or errors"
	}
	return "rxe0: " + strings.Join(moved, ", ")
}

// timedCopy runs `rxfer cp --json --transport rdma args...` and returns the
// daemon-measured rates in MiB/s, from the request to the commit and of the
// moving phase alone; the copy must have stayed on RDMA.
func timedCopy(t *testing.T, size int64, args ...string) (whole, moving float64) {
	t.Helper()
	c0, n0 := readCPU(t), rxeCounters(t)
	last, r := copyJSON(t, append([]string{"--transport", "rdma"}, args...)...)
	t.Logf("%s; %s", cpuSince(t, c0), countersSince(t, n0))
	if last.Transport != pb.Transport_TRANSPORT_RDMA || last.FallbackReason != "" {
		t.Fatalf("transport %v, fallback_reason %q; want TRANSPORT_RDMA\n%s", last.Transport, last.FallbackReason, r)
	}
	res := last.GetResult()
	if res.GetSeconds() <= 0 || res.GetMovingSeconds() <= 0 {
		t.Fatalf("no result.seconds or moving_seconds in the final event\n%s", r)
	}
	t.Logf("%.2fs: setup %.2fs, moving %.2fs, commit %.2fs", res.GetSeconds(), res.GetSetupSeconds(), res.GetMovingSeconds(), res.GetCommitSeconds())
	return float64(size) / mib / res.GetSeconds(), float64(size) / mib / res.GetMovingSeconds()
}

// benchRun registers the regions, warms up (one copy of each kind) and runs
// the rounds; baseline runs ib_write_bw once. srcCtl and dstCtl are the
// daemons' control addresses; bench.bin is in the source's root.
func benchRun(t *testing.T, b *rdmaBench, srcCtl, dstCtl string, baseline func() float64) {
	run := func(args ...string) {
		if r := rxfer(t, args...); r.Code != 0 {
			t.Fatalf("rxfer %v failed:\n%s", args, r)
		}
	}
	sz := strconv.FormatInt(b.Bytes, 10)
	run("regions", srcCtl, "add", "bench-src", sz)
	run("regions", dstCtl, "add", "bench-dst", sz)
	run("cp", "--transport", "rdma", srcCtl+":/bench.bin", srcCtl+":@bench-src")
	region := []string{srcCtl + ":@bench-src", dstCtl + ":@bench-dst"}
	file := []string{"--force", srcCtl + ":/bench.bin", dstCtl + ":/bench.bin"}
	wr, _ := timedCopy(t, b.Bytes, region...)
	wf, _ := timedCopy(t, b.Bytes, file...)
	t.Logf("warm-up: region→region %.1f MiB/s, file→file %.1f MiB/s", wr, wf)
	for i := range benchRounds {
		bw := baseline()
		r, rm := timedCopy(t, b.Bytes, region...)
		f, fm := timedCopy(t, b.Bytes, file...)
		fmac, _ := timedCopy(t, b.Bytes, append([]string{"--verify", "mac"}, file...)...)
		b.FileMACRuns = append(b.FileMACRuns, fmac)
		t.Logf("round %d: file→file --verify mac %.1f MiB/s (%.2fx file→file)", i, fmac, fmac/f)
		t.Logf("round %d: ib_write_bw %.1f, region→region %.1f (%.2fx; moving %.1f, %.2fx), file→file %.1f MiB/s (%.2fx; moving %.1f, %.2fx)",
			i, bw, r, r/bw, rm, rm/bw, f, f/bw, fm, fm/bw)
		b.IBWriteBW, b.RegionRuns, b.FileRuns = append(b.IBWriteBW, bw), append(b.RegionRuns, r), append(b.FileRuns, f)
		b.RegionMoving, b.FileMoving = append(b.RegionMoving, rm), append(b.FileMoving, fm)
	}
	run("regions", srcCtl, "rm", "bench-src")
	run("regions", dstCtl, "rm", "bench-dst")
}

// TestRDMABench: one VM, two daemons on rxe0.
func TestRDMABench(t *testing.T) {
	size, extra := benchSetup(t, 128)
	if os.Getenv("RXFER_VM_COUNT") == "2" {
		t.Skip("the one-VM benchmark runs with one VM")
	}
	a := startDaemon(t, daemonConfig{ID: "bench-a", Extra: extra})
	b := startDaemon(t, daemonConfig{ID: "bench-b", Extra: extra})
	writeRandom(t, a.Path("bench.bin"), size)
	res := &rdmaBench{VMs: 1, Bytes: size, ServeArguments: extra}
	shapes := baselineShapes(extra)
	benchRun(t, res, a.Control, b.Control, func() float64 {
		return bestBaseline(t, shapes, func(s ibShape) float64 { return ibWriteBW(t, "127.0.0.1", size, s, true) })
	})
	sameFile(t, a.Path("bench.bin"), b.Path("bench.bin"))
	res.finish(t)
}

// TestRDMABenchTwoVM: vm0 serves bench.bin; vm1 pulls it. The baseline runs
// the same way round: vm1 starts an ib_write_bw server, vm0's client writes
// into it. They step together over a plain TCP connection on which vm1 sends
// "bw Q M" (vm0 answers with its client's MiB/s over Q queue pairs in M-byte
// messages), "crc" (the source's CRC32C)
// or "done".
func TestRDMABenchTwoVM(t *testing.T) {
	size, extra := benchSetup(t, 64)
	if os.Getenv("RXFER_VM_COUNT") != "2" {
		t.Skip("needs two testbed VMs: make bench-rdma runs it with -vms 2")
	}
	self, peer := os.Getenv("RXFER_VM_IP"), os.Getenv("RXFER_PEER_IP")
	// --insecure: the testbed's private link between the two VMs.
	cfg := daemonConfig{Listen: net.JoinHostPort(self, twoVMCtlPort), DataListen: net.JoinHostPort(self, twoVMDataPort),
		Extra: append(slices.Clip(extra), "--insecure")}
	switch os.Getenv("RXFER_VM_INDEX") {
	case "0":
		cfg.ID = "vm0"
		d := startDaemon(t, cfg)
		writeRandom(t, d.Path("bench.bin"), size)
		conn := testbedenv.TwoVMConnect(t, twoVMSyncPort, true)
		defer conn.Close()
		start := rxeCounters(t)
		in := bufio.NewScanner(conn)
		for in.Scan() {
			cmd, arg, _ := strings.Cut(in.Text(), " ")
			switch cmd {
			case "bw":
				var s ibShape
				if _, err := fmt.Sscan(arg, &s.qps, &s.msg); err != nil || s.qps < 1 || s.msg < 1 {
					t.Fatalf("vm1 asked for %q", in.Text())
				}
				fmt.Fprintf(conn, "%f\n", ibWriteBW(t, peer, size, s, false))
			case "crc":
				fmt.Fprintf(conn, "%d\n", fileCRC(t, d.Path("bench.bin")))
			case "done":
				t.Logf("vm0 (sender) %s", countersSince(t, start))
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
		bw := func(s ibShape) float64 {
			for attempt := 1; ; attempt++ {
				c0, n0 := readCPU(t), rxeCounters(t)
				srv := exec.Command("ib_write_bw", ibWriteBWArgs(size, s)...)
				var out strings.Builder
				srv.Stdout, srv.Stderr = &out, &out
				if err := srv.Start(); err != nil {
					t.Fatalf("ib_write_bw server: %v", err)
				}
				// vm0's client retries until the server listens.
				v, err := strconv.ParseFloat(ask(fmt.Sprintf("bw %d %d", s.qps, s.msg)), 64)
				serr := srv.Wait()
				t.Logf("ib_write_bw server: %s; %s", cpuSince(t, c0), countersSince(t, n0))
				switch {
				case err != nil:
					t.Fatalf("vm0's ib_write_bw client answered: %v", err)
				case v > 0 && serr == nil:
					return v
				case attempt == 5:
					t.Fatalf("ib_write_bw: no result in %d runs; the last server: %v\n%s", attempt, serr, out.String())
				}
				t.Logf("ib_write_bw run %d gave no result (server: %v); running it again", attempt, serr)
			}
		}
		shapes := baselineShapes(extra)
		benchRun(t, res, peerCtl, d.Control, func() float64 { return bestBaseline(t, shapes, bw) })
		if got, want := fileCRC(t, d.Path("bench.bin")), ask("crc"); strconv.FormatUint(uint64(got), 10) != want {
			t.Errorf("bench.bin at vm1 has CRC32C %d, vm0's has %s", got, want)
		}
		res.finish(t)
	default:
		t.Fatalf("RXFER_VM_INDEX=%q, want 0 or 1", os.Getenv("RXFER_VM_INDEX"))
	}
}

// The baseline's shapes follow the daemons' lanes and chunk size, without
// running the same shape twice.
func TestBaselineShapes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []ibShape
	}{
		{[]string{"--rdma-lanes", "3", "--rdma-chunk-size=2097152"}, []ibShape{{1, mib}, {3, mib}, {3, 2 * mib}}},
		{[]string{"--rdma-lanes=1", "--rdma-chunk-size", "1048576"}, []ibShape{{1, mib}}},
		{[]string{"--rdma-depth", "8", "--rdma-lanes", "1"}, []ibShape{{1, mib}, {1, transfer.DefaultRDMAChunk}}},
	} {
		if got := baselineShapes(tc.args); !slices.Equal(got, tc.want) {
			t.Errorf("baselineShapes(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}
