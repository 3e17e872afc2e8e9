package main

// RDMA end-to-end tests: real `rxfer serve` daemons and the CLI as
// subprocesses, inside the rdma_rxe testbed VM (testbed/README.md). On the
// host they skip; in the testbed (RXFER_TESTBED=1) they fail when RDMA is
// not usable or a copy did not use it. TestMain runs only ^TestRDMA in the
// testbed. TestRDMALinkDeleteDuringCopy deletes rxe0 and must stay last.
//
//	make build testbed-bins TESTBED_PKGS=./cmd/rxfer/
//	cd cmd/rxfer && ../../testbed/.cache/bin/rxfer-testbed -e RXFER_BIN=$PWD/../../bin/rxfer \
//	    run -- ../../testbed/.cache/bin/cmd_rxfer.test -test.v
//	... -vms 2 run -- ../../testbed/.cache/bin/cmd_rxfer.test -test.v -test.run TwoVM

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/internal/testbedenv"
)

// rxeDevice is the testbed's soft-RoCE device (testbed/guest/setup.sh).
const rxeDevice = "rxe0"

// requireRDMA skips a test on a host and fails it in the testbed unless
// `rxfer devices --json` lists rxeDevice as usable: a test that claims RDMA
// must not pass without it. These tests count rxeDevice's resources, so no
// other device will do.
func requireRDMA(t *testing.T) {
	t.Helper()
	requireBinary(t)
	testbedenv.RequireRDMA(t, rxeUsable(t))
}

// rxeUsable returns nil if `rxfer devices --json` lists rxeDevice as usable,
// else an error that says what it printed.
func rxeUsable(t *testing.T) error {
	t.Helper()
	r := rxfer(t, "devices", "--json")
	if r.Code != 0 {
		return fmt.Errorf("rxfer devices failed:\n%s", r)
	}
	var info pb.NodeInfo
	if err := protojson.Unmarshal([]byte(strings.TrimSpace(r.Stdout)), &info); err != nil {
		return fmt.Errorf("rxfer devices --json: %w\n%s", err, r)
	}
	why := "not listed"
	for _, tr := range info.Transports {
		if tr.Transport == pb.Transport_TRANSPORT_RDMA && tr.Reason != "" {
			why = tr.Reason
		}
	}
	for _, d := range info.RdmaDevices {
		if d.Name == rxeDevice && d.Usable {
			return nil
		}
		if d.Name == rxeDevice {
			why = d.Reason
		}
	}
	return fmt.Errorf("`rxfer devices --json`: %s: %s", rxeDevice, why)
}

// parseEvents parses `rxfer cp --json` output: one TransferInfo per line.
func parseEvents(t testing.TB, r result) []*pb.TransferInfo {
	t.Helper()
	var events []*pb.TransferInfo
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		if line == "" {
			continue
		}
		var e pb.TransferInfo
		if err := protojson.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("stdout line is not a TransferInfo: %q: %v\n%s", line, err, r)
		}
		events = append(events, &e)
	}
	return events
}

// copyJSON runs `rxfer cp --json args...` and returns its final event; it
// fails the test unless the copy exits 0 with a COMMITTED final event.
func copyJSON(t testing.TB, args ...string) (*pb.TransferInfo, result) {
	t.Helper()
	r := rxfer(t, append([]string{"cp", "--json"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("copy failed:\n%s", r)
	}
	ev := parseEvents(t, r)
	if len(ev) == 0 {
		t.Fatalf("no events\n%s", r)
	}
	last := ev[len(ev)-1]
	if last.State != pb.State_STATE_COMMITTED {
		t.Fatalf("final event state %v, want STATE_COMMITTED\n%s", last.State, r)
	}
	return last, r
}

// checkCopy checks a committed copy of src at dst: the reported CRC32C,
// the bytes, and (when wantRDMA) that it went over RDMA with no fallback.
func checkCopy(t testing.TB, last *pb.TransferInfo, r result, src, dst string, wantRDMA bool) {
	t.Helper()
	if wantRDMA && (last.Transport != pb.Transport_TRANSPORT_RDMA || last.FallbackReason != "") {
		t.Errorf("transport %v, fallback_reason %q; want TRANSPORT_RDMA\n%s", last.Transport, last.FallbackReason, r)
	}
	if got, want := last.GetResult().GetCrc32C(), fileCRC(t, src); got != want {
		t.Errorf("result.crc32c = %08x, want %08x", got, want)
	}
	sameFile(t, src, dst)
}

func TestRDMACopies(t *testing.T) {
	requireRDMA(t)
	a, b := startPair(t)
	for _, size := range []int64{0, 1, 4096, 1<<20 + 1, 64 << 20, 256 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			name := fmt.Sprintf("f%d.bin", size)
			writeRandom(t, a.Path(name), size)
			start := time.Now()
			last, r := copyJSON(t, a.At("/"+name), b.At("/"))
			took := time.Since(start)
			checkCopy(t, last, r, a.Path(name), b.Path(name), size > 0)
			if size >= 1<<20 {
				t.Logf("%d bytes over %v in %v (%.1f MB/s)", size, last.Transport, took.Round(time.Millisecond), float64(size)/took.Seconds()/1e6)
			}
			wantEntries(t, b.Root, name)
			// The VM's file system is RAM: keep at most one big pair around.
			os.Remove(a.Path(name))
			os.Remove(b.Path(name))
		})
	}
	t.Run("transport rdma", func(t *testing.T) {
		writeRandom(t, a.Path("forced.bin"), 4<<20+3)
		last, r := copyJSON(t, "--transport", "rdma", a.At("/forced.bin"), b.At("/"))
		checkCopy(t, last, r, a.Path("forced.bin"), b.Path("forced.bin"), true)
	})
	t.Run("local to remote", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "local.bin")
		writeRandom(t, src, 8<<20+5)
		last, r := copyJSON(t, src, b.At("/"))
		checkCopy(t, last, r, src, b.Path("local.bin"), true)
	})
	t.Run("remote to local", func(t *testing.T) {
		writeRandom(t, a.Path("pulled.bin"), 4<<20+7)
		dir := t.TempDir()
		last, r := copyJSON(t, a.At("/pulled.bin"), dir+"/")
		checkCopy(t, last, r, a.Path("pulled.bin"), filepath.Join(dir, "pulled.bin"), true)
		wantEntries(t, dir, "pulled.bin")
	})
}

func TestRDMAConcurrent(t *testing.T) {
	requireRDMA(t)
	a, b := startPair(t)
	const n = 8
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("c%d.bin", i))
		writeRandom(t, a.Path(names[i]), 4<<20+int64(i))
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { results[i] = rxfer(t, "cp", "--json", a.At("/"+names[i]), b.At("/")) })
	}
	wg.Wait()
	for i, r := range results {
		if r.Code != 0 {
			t.Errorf("copy %d failed:\n%s", i, r)
			continue
		}
		ev := parseEvents(t, r)
		last := ev[len(ev)-1]
		if last.State != pb.State_STATE_COMMITTED {
			t.Errorf("copy %d: final state %v\n%s", i, last.State, r)
			continue
		}
		checkCopy(t, last, r, a.Path(names[i]), b.Path(names[i]), true)
	}
	wantEntries(t, b.Root, names...)
}

// resourceLine formats the counts the tests compare.
func resourceLine(c map[string]int) string {
	return fmt.Sprintf("pd %d cq %d qp %d mr %d", c["pd"], c["cq"], c["qp"], c["mr"])
}

func TestRDMACancelReleasesResources(t *testing.T) {
	requireRDMA(t)
	a, b := startPair(t)
	writeRandom(t, a.Path("big.bin"), 256<<20)
	base := testbedenv.ResourceCounts(t, rxeDevice)
	t.Logf("idle daemons: %s", resourceLine(base))

	r, moving := firstMoving(t, pb.Transport_TRANSPORT_UNSPECIFIED, a.At("/big.bin"), b.At("/"))
	var e *pb.TransferInfo
	select {
	case e = <-moving:
	case <-r.scanned:
		t.Fatalf("no MOVING event with bytes_done > 0 before the copy ended:\n%s", r.Wait(t))
	}
	if e.Transport != pb.Transport_TRANSPORT_RDMA {
		t.Errorf("copy moves over %v (fallback_reason %q), want TRANSPORT_RDMA", e.Transport, e.FallbackReason)
	}
	mid := testbedenv.ResourceCounts(t, rxeDevice)
	t.Logf("mid-copy (%d of %d bytes): %s", e.BytesDone, e.BytesTotal, resourceLine(mid))
	if mid["qp"] <= base["qp"] || mid["mr"] <= base["mr"] {
		t.Errorf("a copy over RDMA holds no more QPs/MRs than idle daemons (%s vs %s): the counts measure nothing",
			resourceLine(mid), resourceLine(base))
	}
	wantCancel(t, a, e.TransferId)
	res := r.Wait(t)
	if res.Code == 0 {
		t.Fatalf("the copy finished before it could be cancelled:\n%s", res)
	}
	wantFailure(t, res, 1, "Canceled")
	wantOnlyPartials(t, b.Root) // nothing at the final path; the partial file is kept for a resume
	wantEntries(t, a.Root, "big.bin")
	// Both daemons release before they answer: no polling.
	if after := testbedenv.ResourceCounts(t, rxeDevice); resourceLine(after) != resourceLine(base) {
		t.Errorf("after the cancelled copy: %s, want the idle daemons' %s (leaked RDMA resources)",
			resourceLine(after), resourceLine(base))
	}
	// The nodes still copy over RDMA afterwards.
	writeRandom(t, a.Path("after.bin"), 1<<20)
	last, cr := copyJSON(t, a.At("/after.bin"), b.At("/"))
	checkCopy(t, last, cr, a.Path("after.bin"), b.Path("after.bin"), true)
}

// pcgBlocks calls fn with n deterministic bytes in blocks of at most 1 MiB:
// both testbed VMs generate the same content from the fixed seed.
func pcgBlocks(n int64, fn func([]byte) error) error {
	p := rand.NewPCG(0x72786665, 0x7232766d)
	block := make([]byte, 1<<20)
	for n > 0 {
		for i := 0; i < len(block); i += 8 {
			binary.LittleEndian.PutUint64(block[i:], p.Uint64())
		}
		k := min(n, int64(len(block)))
		if err := fn(block[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

const (
	twoVMSize     = 64 << 20
	twoVMCtlPort  = "7470"
	twoVMDataPort = "7471"
	twoVMSyncPort = "7479" // vm0 stays up until vm1 says "done" here
	twoVMTimeout  = 3 * time.Minute
)

// TestRDMATwoVM copies 64 MiB from vm0's daemon to vm1's over rxe across
// the virtual link; the runner runs it in both VMs (-vms 2 -test.run TwoVM).
func TestRDMATwoVM(t *testing.T) {
	requireRDMA(t)
	if os.Getenv("RXFER_VM_COUNT") != "2" {
		t.Skip("needs two testbed VMs: rxfer-testbed -vms 2 run -- ... -test.run TwoVM")
	}
	self, peer := os.Getenv("RXFER_VM_IP"), os.Getenv("RXFER_PEER_IP")
	if self == "" || peer == "" {
		t.Fatalf("RXFER_VM_IP=%q RXFER_PEER_IP=%q: the runner sets both with two VMs", self, peer)
	}
	switch os.Getenv("RXFER_VM_INDEX") {
	case "0":
		twoVMSource(t, self)
	case "1":
		twoVMDest(t, self, peer)
	default:
		t.Fatalf("RXFER_VM_INDEX=%q, want 0 or 1", os.Getenv("RXFER_VM_INDEX"))
	}
}

// twoVMSource serves the file and waits for vm1's "done".
func twoVMSource(t *testing.T, self string) {
	// The sync listener is up before the daemon, so once vm1 sees the
	// daemon healthy it can connect here at the first try.
	l, err := net.Listen("tcp", net.JoinHostPort(self, twoVMSyncPort))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	root := t.TempDir()
	f, err := os.Create(filepath.Join(root, "src.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pcgBlocks(twoVMSize, func(b []byte) error { _, err := f.Write(b); return err }); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, daemonConfig{ID: "vm0", Root: root, Extra: []string{"--insecure"}, // the testbed's private link
		Listen: net.JoinHostPort(self, twoVMCtlPort), DataListen: net.JoinHostPort(self, twoVMDataPort)})
	l.(*net.TCPListener).SetDeadline(time.Now().Add(twoVMTimeout))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("vm1 never reported back: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(twoVMTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading vm1's report: %v (got %q)", err, line)
	}
	t.Logf("vm1 reports: %s", strings.TrimSpace(line))
}

// twoVMDest runs its own daemon, pulls vm0's file to it over RDMA and checks it.
func twoVMDest(t *testing.T, self, peer string) {
	d := startDaemon(t, daemonConfig{ID: "vm1", Extra: []string{"--insecure"}, // the testbed's private link
		Listen: net.JoinHostPort(self, twoVMCtlPort), DataListen: net.JoinHostPort(self, twoVMDataPort)})
	peerCtl := net.JoinHostPort(peer, twoVMCtlPort)
	ctx, cancel := context.WithTimeout(context.Background(), twoVMTimeout)
	defer cancel()
	conn, err := grpc.NewClient(peerCtl, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	conn.Close()
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("vm0's daemon at %s: %v %v", peerCtl, resp.GetStatus(), err)
	}
	t.Logf("vm0's daemon ready after %v", time.Since(start).Round(time.Millisecond))
	report, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(peer, twoVMSyncPort))
	if err != nil {
		t.Fatalf("vm0's sync port: %v", err)
	}
	defer func() {
		status := "ok"
		if t.Failed() {
			status = "FAILED"
		}
		fmt.Fprintf(report, "done %s\n", status)
		report.Close()
	}()

	start = time.Now()
	last, r := copyJSON(t, peerCtl+":/src.bin", d.At("/"))
	took := time.Since(start)
	if last.Transport != pb.Transport_TRANSPORT_RDMA || last.FallbackReason != "" {
		t.Errorf("transport %v, fallback_reason %q; want TRANSPORT_RDMA\n%s", last.Transport, last.FallbackReason, r)
	}
	t.Logf("%d bytes vm0 → vm1 over %v in %v (%.1f MB/s)", twoVMSize, last.Transport, took.Round(time.Millisecond),
		float64(twoVMSize)/took.Seconds()/1e6)
	got, err := os.Open(d.Path("src.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	buf := make([]byte, 1<<20)
	var off int64
	err = pcgBlocks(twoVMSize, func(want []byte) error {
		n, err := io.ReadFull(got, buf[:len(want)])
		if !bytes.Equal(buf[:n], want) {
			return fmt.Errorf("%s differs from vm0's content in the MiB at %d (read %d bytes: %v)", got.Name(), off, n, err)
		}
		h.Write(want)
		off += int64(n)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := got.Read(buf); n != 0 {
		t.Errorf("%s is longer than %d bytes", got.Name(), twoVMSize)
	}
	if last.GetResult().GetCrc32C() != h.Sum32() {
		t.Errorf("result.crc32c = %08x, want %08x", last.GetResult().GetCrc32C(), h.Sum32())
	}
}

// daemonPID finds the `rxfer serve` process whose export root is root.
func daemonPID(root string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte("\x00serve\x00")) && bytes.Contains(b, []byte("\x00--root\x00"+root+"\x00")) {
			return pid
		}
	}
	return 0
}

// TestRDMAPortDownDuringCopy takes rxe0's netdev down under a running copy
// (AUTO policy). rxe reports IBV_EVENT_PORT_ERR (this test reads it too) and
// fails the WRITEs posted after it; the source breaks its QP on whichever it
// sees first, and the copy must finish over TCP (the daemons talk over
// loopback, which stays up), verified, with the cause in the fallback reason.
// The netdev comes back up afterwards (PORT_ACTIVE) and RDMA works again.
func TestRDMAPortDownDuringCopy(t *testing.T) {
	requireRDMA(t)
	a, b := startPair(t)
	writeRandom(t, a.Path("big.bin"), 256<<20)
	r, moving := firstMoving(t, pb.Transport_TRANSPORT_RDMA, a.At("/big.bin"), b.At("/"))
	var downAt time.Time
	var netdev string
	select {
	case e := <-moving:
		t.Logf("taking %s's port down at %d of %d bytes", rxeDevice, e.BytesDone, e.BytesTotal)
		downAt = time.Now()
		netdev = testbedenv.TakePortDown(t, rxeDevice) // it comes back up when the test ends
	case <-r.scanned:
		t.Fatalf("no MOVING event over RDMA with bytes_done > 0:\n%s", r.Wait(t))
	}
	res := r.Wait(t)
	if res.Code != 0 {
		t.Fatalf("copy failed after %s went down (AUTO must fail over to TCP):\n%s", netdev, res)
	}
	ev := parseEvents(t, res)
	last := ev[len(ev)-1]
	checkCopy(t, last, res, a.Path("big.bin"), b.Path("big.bin"), false)
	// Which the source sees first is a race: the PORT_ERR event (the
	// endpoint's watcher breaks the QP) or rxe failing the posted WRITEs with
	// LOC_QP_OP_ERR once the port is down (or WR_FLUSH_ERR after the break).
	named := false
	for _, why := range []string{"IBV_EVENT_PORT_ERR", "LOC_QP_OP_ERR", "WR_FLUSH_ERR"} {
		named = named || strings.Contains(last.FallbackReason, why)
	}
	if last.Transport != pb.Transport_TRANSPORT_TCP || !named {
		t.Fatalf("final transport %v, fallback_reason %q: want TCP with a reason naming IBV_EVENT_PORT_ERR or the failed work requests", last.Transport, last.FallbackReason)
	}
	t.Logf("copy finished %v after the port went down: %s", time.Since(downAt).Round(time.Millisecond), last.FallbackReason)
	os.Remove(b.Path("big.bin"))
}

// TestRDMALinkDeleteDuringCopy runs `rdma link delete rxe0` under a running
// copy (AUTO policy). The copy must commit, verified: over TCP with a
// fallback_reason naming RDMA if RDMA broke, or over RDMA if the device kept
// working. On the testbed's 6.1 kernel it is the latter: rxe has no
// disassociate_ucontext, so ib_uverbs_remove_one neither breaks the QPs nor
// raises an async event; the delete blocks until every process has closed
// the device, i.e. until the transfer released it. The test then checks
// that the delete returns once the copy ended, without stopping the daemons
// (no idle daemon may keep the device open), and that the daemons, now
// without a device, copy over TCP under AUTO with a reason, and refuse
// --transport rdma. It breaks the device until its cleanup adds the link
// again: keep it LAST.
func TestRDMALinkDeleteDuringCopy(t *testing.T) {
	requireRDMA(t)
	netdev := testbedenv.Netdev(rxeDevice)
	// Registered before the daemons start, so it runs after they stopped.
	t.Cleanup(func() {
		if _, err := system("rdma", "link", "show", rxeDevice+"/1"); err == nil {
			return
		}
		if out, err := system("rdma", "link", "add", rxeDevice, "type", "rxe", "netdev", netdev); err != nil {
			t.Errorf("re-adding %s: %v: %s", rxeDevice, err, out)
		}
		out, _ := system("rdma", "link", "show", rxeDevice+"/1")
		t.Logf("re-added: %s", strings.TrimSpace(string(out)))
	})
	a, b := startPair(t)
	writeRandom(t, a.Path("big.bin"), 256<<20)
	dumpDaemons := func() {
		for _, d := range []*daemon{a, b} {
			if pid := daemonPID(d.Root); pid != 0 {
				syscall.Kill(pid, syscall.SIGQUIT) // goroutine dump to its stderr, logged on failure
			}
		}
	}

	r, moving := firstMoving(t, pb.Transport_TRANSPORT_RDMA, a.At("/big.bin"), b.At("/"))
	deleted := make(chan result, 1) // the `rdma link delete` run, once it returned
	var deleteAt time.Time
	select {
	case e := <-moving:
		t.Logf("deleting %s at %d of %d bytes", rxeDevice, e.BytesDone, e.BytesTotal)
		deleteAt = time.Now()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "rdma", "link", "delete", rxeDevice)
			cmd.WaitDelay = time.Second
			out, err := cmd.CombinedOutput()
			deleted <- result{Args: cmd.Args, Code: cmd.ProcessState.ExitCode(), Stdout: fmt.Sprint(string(out), err), Took: time.Since(deleteAt)}
		}()
	case <-r.scanned:
		t.Fatalf("no MOVING event over RDMA with bytes_done > 0:\n%s", r.Wait(t))
	}
	// A failover that hangs must not eat the VM's time: after 90 s dump the
	// daemons' goroutines.
	select {
	case <-r.scanned:
	case <-time.After(90 * time.Second):
		select {
		case d := <-deleted:
			t.Errorf("rdma link delete returned after %v: exit %d: %s", d.Took, d.Code, d.Stdout)
		default:
			t.Errorf("rdma link delete has not returned after %v", time.Since(deleteAt).Round(time.Second))
		}
		dumpDaemons()
		r.Signal(os.Interrupt)
		t.Fatalf("copy still running 90 s after %s was deleted; goroutine dumps follow in the daemons' stderr\nCLI stdout (tail):\n%s",
			rxeDevice, tail(r.stdout.String(), 5))
	}
	res := r.Wait(t)
	copyEnd := time.Since(deleteAt)
	if res.Code != 0 {
		t.Fatalf("copy failed after %s was deleted (AUTO must fail over to TCP):\n%s", rxeDevice, res)
	}
	ev := parseEvents(t, res)
	last := ev[len(ev)-1]
	if last.State != pb.State_STATE_COMMITTED {
		t.Fatalf("final state %v\n%s", last.State, res)
	}
	checkCopy(t, last, res, a.Path("big.bin"), b.Path("big.bin"), false)
	wantEntries(t, b.Root, "big.bin")
	os.Remove(b.Path("big.bin"))

	// The delete must complete with both daemons still up.
	var del result
	select {
	case del = <-deleted:
	case <-time.After(30 * time.Second):
		dumpDaemons()
		t.Fatalf("rdma link delete %s still blocked 30 s after the copy ended: an idle daemon keeps the device open (goroutine dumps in the daemons' stderr)", rxeDevice)
	}
	if del.Code != 0 {
		t.Fatalf("rdma link delete %s: exit %d: %s", rxeDevice, del.Code, del.Stdout)
	}
	switch {
	case last.Transport == pb.Transport_TRANSPORT_TCP && strings.Contains(last.FallbackReason, "RDMA"):
		t.Logf("failed over to TCP: %s", last.FallbackReason)
	case last.Transport == pb.Transport_TRANSPORT_RDMA && del.Took >= copyEnd:
		t.Logf("FAILOVER NOT EXERCISED: the copy finished over RDMA %v after the delete started; the delete returned only after that (%v): "+
			"rxe keeps working until its users close it", copyEnd.Round(time.Millisecond), del.Took.Round(time.Millisecond))
	default:
		t.Errorf("final transport %v, fallback_reason %q, the delete returned after %v and the copy ended after %v: "+
			"want TCP with a reason naming RDMA, or RDMA with a delete that waited for the copy",
			last.Transport, last.FallbackReason, del.Took.Round(time.Millisecond), copyEnd.Round(time.Millisecond))
	}

	// Without the device: AUTO copies over TCP and says why; RDMA is refused.
	writeRandom(t, a.Path("after.bin"), 1<<20+9)
	after, ar := copyJSON(t, a.At("/after.bin"), b.At("/"))
	if after.Transport != pb.Transport_TRANSPORT_TCP || after.FallbackReason == "" {
		t.Errorf("copy without %s: transport %v, fallback_reason %q; want TCP with a reason\n%s", rxeDevice, after.Transport, after.FallbackReason, ar)
	} else {
		t.Logf("without %s: %s", rxeDevice, after.FallbackReason)
	}
	checkCopy(t, after, ar, a.Path("after.bin"), b.Path("after.bin"), false)
	fr := rxfer(t, "cp", "--json", "--transport", "rdma", a.At("/after.bin"), b.At("/forced.bin"))
	wantFailure(t, fr, 1, "FailedPrecondition")
	wantEntries(t, b.Root, "after.bin")
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
