package main

// Helpers for the end-to-end tests: the rxfer binary is built once in
// TestMain, daemons run as subprocesses (optionally inside a network
// namespace), and the CLI is run as a subprocess whose exit status, output
// and files the tests check.

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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

// rxferBin is the rxfer binary under test; empty when it could not be built
// (then every end-to-end test skips and says why in binSkipReason).
var rxferBin, binSkipReason string

// Bounds for waiting on subprocesses. They only stop a broken test from
// hanging; nothing waits for them to pass.
const (
	readyTimeout = 30 * time.Second  // daemon start until its ready line
	stopTimeout  = 15 * time.Second  // SIGTERM until the daemon exited
	cliTimeout   = 180 * time.Second // one CLI run (a 1 GiB netns copy included)
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// testbedRun is the -test.run of this package inside the testbed VM.
const testbedRun = "^(TestRDMA|TestKTLS)"

// testMain builds the binary from this package (the test's working
// directory) with the go command that runs the tests, or uses $RXFER_BIN, so
// a test binary built with `go test -c` can run where there is no toolchain.
func testMain(m *testing.M) int {
	if testbedenv.Active() {
		// In the rdma_rxe VM only what needs the guest's kernel runs: the RDMA
		// suite and kTLS (the host suite already ran on the host, and the VM
		// is slow), unless -test.run says otherwise.
		flag.Parse()
		if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" {
			flag.Set("test.run", testbedRun)
		}
		// The VM has no business building rxfer: the host built it and passes it.
		if os.Getenv("RXFER_BIN") == "" {
			fmt.Fprintln(os.Stderr, "e2e: RXFER_TESTBED=1 but RXFER_BIN is not set: pass the host-built binary (rxfer-testbed -e RXFER_BIN=$PWD/bin/rxfer)")
			return 1
		}
	}
	if bin := os.Getenv("RXFER_BIN"); bin != "" {
		rxferBin = bin
		return m.Run()
	}
	// Fuzzing runs parsers only: every fuzz worker process would otherwise
	// build rxfer again, and a short -fuzztime runs out while it does.
	flag.Parse()
	for _, name := range []string{"test.fuzz", "test.fuzzworker"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			binSkipReason = "fuzzing: rxfer is not built"
			return m.Run()
		}
	}
	dir, err := os.MkdirTemp("", "rxfer-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	goCmd, err := exec.LookPath("go")
	if err != nil {
		if goroot := os.Getenv("GOROOT"); goroot != "" {
			goCmd, err = filepath.Join(goroot, "bin", "go"), nil
		}
	}
	if err != nil {
		binSkipReason = "no go command to build rxfer and RXFER_BIN is not set"
		return m.Run()
	}
	build := exec.Command(goCmd, "build", "-o", filepath.Join(dir, "rxfer"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build: %v\n%s", err, out)
		return 1
	}
	rxferBin = filepath.Join(dir, "rxfer")
	return m.Run()
}

func requireBinary(t testing.TB) {
	t.Helper()
	if rxferBin == "" {
		t.Skip("end-to-end test skipped: " + binSkipReason)
	}
}

// command returns the rxfer command line args, run inside network
// namespace ns when ns is not empty (`ip netns exec` execs, so the process
// we signal is rxfer itself).
func command(ctx context.Context, ns string, args ...string) *exec.Cmd {
	name := rxferBin
	if ns != "" {
		name, args = "ip", append([]string{"netns", "exec", ns, rxferBin}, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = cleanEnv()
	// If the test binary dies, its daemons must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// cleanEnv is the environment without a token the tests did not choose.
func cleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "RXFER_TOKEN=") })
}

// syncBuffer is a bytes.Buffer safe for a subprocess to write while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is a running `rxfer serve`.
type daemon struct {
	Root    string // export root on this host
	Control string // control (gRPC) address
	Data    string // TCP data-channel address
	Pid     int    // the rxfer process (ip netns exec execs it)
	stderr  *syncBuffer
	stop    func() error // SIGTERM, then wait; idempotent
	// metrics receives the /metrics URL from the daemon's second stdout
	// line (closed without one when metrics are off).
	metrics chan string
}

// Stop stops the daemon (SIGTERM, then wait) and fails the test unless it
// exits 0 in time. The test's cleanup calls it too.
func (d *daemon) Stop(t testing.TB) {
	t.Helper()
	if err := d.stop(); err != nil {
		t.Errorf("daemon %s did not stop cleanly: %v\nstderr:\n%s", d.Control, err, d.stderr)
	}
}

// daemonConfig says how to start a daemon; zero values pick loopback with
// ephemeral ports, a fresh root and no token.
type daemonConfig struct {
	Root       string // default: a new temporary directory
	NS         string // network namespace to run in
	Listen     string // default 127.0.0.1:0
	DataListen string // default 127.0.0.1:0
	TokenFile  string
	ID         string   // default: derived from the test name
	Extra      []string // more `rxfer serve` flags
}

var readyLine = regexp.MustCompile(`^rxfer serving control=(\S+) data=(\S+)$`)

// startDaemon starts `rxfer serve`, waits for its ready line and stops it
// (SIGTERM, then wait; it must exit 0) when the test ends.
func startDaemon(t *testing.T, cfg daemonConfig) *daemon {
	t.Helper()
	requireBinary(t)
	if cfg.Root == "" {
		cfg.Root = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DataListen == "" {
		cfg.DataListen = "127.0.0.1:0"
	}
	if cfg.ID == "" {
		cfg.ID = strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	}
	args := []string{"serve", "--root", cfg.Root, "--listen", cfg.Listen, "--data-listen", cfg.DataListen, "--node-id", cfg.ID,
		// An ephemeral metrics port, and SIGTERM cancelling at once (the
		// drain tests ask for a drain); Extra may say otherwise: the last flag wins.
		"--metrics-listen", "127.0.0.1:0", "--drain-timeout", "0"}
	if cfg.TokenFile != "" {
		args = append(args, "--token-file", cfg.TokenFile)
	}
	args = append(args, cfg.Extra...)
	cmd := command(context.Background(), cfg.NS, args...)
	d := &daemon{Root: cfg.Root, stderr: &syncBuffer{}, metrics: make(chan string, 1)}
	cmd.Stderr = d.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	d.Pid = cmd.Process.Pid
	// The reader owns stdout until EOF; Wait may only run after it is done.
	ready := make(chan []string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			ready <- readyLine.FindStringSubmatch(sc.Text())
		}
		close(ready)
		if sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "rxfer metrics="); ok {
				d.metrics <- u
			}
		}
		close(d.metrics)
		io.Copy(io.Discard, stdout)
	}()
	d.stop = sync.OnceValue(func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		<-drained
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			return err
		case <-time.After(stopTimeout):
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("did not exit within %v of SIGTERM", stopTimeout)
		}
	})
	t.Cleanup(func() {
		d.Stop(t)
		if t.Failed() {
			t.Logf("daemon %s stderr:\n%s", cfg.ID, d.stderr)
		}
	})
	select {
	case m, ok := <-ready:
		if !ok || m == nil {
			cmd.Process.Kill()
			t.Fatalf("daemon %v: no ready line (got %q)\nstderr:\n%s", cmd.Args, m, d.stderr)
		}
		d.Control, d.Data = m[1], m[2]
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		t.Fatalf("daemon %v: not ready within %v\nstderr:\n%s", cmd.Args, readyTimeout, d.stderr)
	}
	return d
}

// At names a path beneath the daemon's export root in HOST:PORT:/path form.
func (d *daemon) At(p string) string { return d.Control + ":" + p }

// Path is the host path of p beneath the daemon's export root.
func (d *daemon) Path(p string) string { return filepath.Join(d.Root, p) }

// startPair starts two daemons on loopback.
func startPair(t *testing.T) (a, b *daemon) {
	t.Helper()
	return startDaemon(t, daemonConfig{ID: "node-a"}), startDaemon(t, daemonConfig{ID: "node-b"})
}

// result is the outcome of one CLI run.
type result struct {
	Args           []string
	Code           int
	Stdout, Stderr string
	Took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("rxfer %s: exit %d after %v\nstdout:\n%s\nstderr:\n%s",
		strings.Join(r.Args, " "), r.Code, r.Took.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// lastLine is the last non-empty line of stdout.
func (r result) lastLine() string {
	lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
	return lines[len(lines)-1]
}

// rxfer runs the CLI on this host; see rxferIn.
func rxfer(t testing.TB, args ...string) result {
	t.Helper()
	return rxferIn(t, "", args...)
}

// rxferIn runs the CLI (in network namespace ns, if not empty) and returns
// its result; it does not judge the exit status. Safe to call from several
// goroutines.
func rxferIn(t testing.TB, ns string, args ...string) result {
	t.Helper()
	return startRxfer(t, ns, nil, args...).Wait(t)
}

// running is a CLI run in progress.
type running struct {
	cmd            *exec.Cmd
	args           []string
	ctx            context.Context
	cancel         context.CancelFunc
	start          time.Time
	stdout, stderr syncBuffer
	scanned        chan struct{}
}

// startRxfer starts the CLI; onLine, if not nil, sees each stdout line as
// it is printed (from another goroutine).
func startRxfer(t testing.TB, ns string, onLine func(string), args ...string) *running {
	t.Helper()
	requireBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	r := &running{args: args, ctx: ctx, cancel: cancel, scanned: make(chan struct{})}
	r.cmd = command(ctx, ns, args...)
	r.cmd.Stderr = &r.stderr
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.start = time.Now()
	if err := r.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %v: %v", r.cmd.Args, err)
	}
	go func() {
		defer close(r.scanned)
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			fmt.Fprintln(&r.stdout, sc.Text())
			if onLine != nil {
				onLine(sc.Text())
			}
		}
		io.Copy(io.Discard, out)
	}()
	return r
}

// Signal sends sig to the CLI process.
func (r *running) Signal(sig os.Signal) error { return r.cmd.Process.Signal(sig) }

// Wait waits for the CLI to exit and returns its result.
func (r *running) Wait(t testing.TB) result {
	t.Helper()
	defer r.cancel()
	<-r.scanned
	err := r.cmd.Wait()
	res := result{Args: r.args, Code: -1, Stdout: r.stdout.String(), Stderr: r.stderr.String(), Took: time.Since(r.start)}
	if r.cmd.ProcessState != nil {
		res.Code = r.cmd.ProcessState.ExitCode()
	}
	if _, exit := err.(*exec.ExitError); err != nil && !exit || r.ctx.Err() != nil {
		t.Errorf("running %v: %v (context: %v)\n%s", r.cmd.Args, err, r.ctx.Err(), res)
	}
	return res
}

// mustCopy runs `rxfer cp` with args and fails the test unless it exits 0
// and its final line reports the copy.
func mustCopy(t testing.TB, ns string, args ...string) result {
	t.Helper()
	r := rxferIn(t, ns, append([]string{"cp", "--chunk-size", "65536"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("copy failed:\n%s", r)
	}
	if !strings.HasPrefix(r.lastLine(), "copied ") {
		t.Fatalf("final line %q does not start with \"copied\"\n%s", r.lastLine(), r)
	}
	return r
}

// wantFailure checks a CLI run's exit status and that stderr contains every
// one of want (such as the gRPC code and the offending path).
func wantFailure(t testing.TB, r result, code int, want ...string) {
	t.Helper()
	if r.Code != code {
		t.Errorf("exit status %d, want %d\n%s", r.Code, code, r)
	}
	for _, w := range want {
		if !strings.Contains(r.Stderr, w) {
			t.Errorf("stderr does not mention %q\n%s", w, r)
		}
	}
	if r.Code == 1 && !strings.HasPrefix(r.Stderr, "rxfer ") {
		t.Errorf("stderr should start with \"rxfer COMMAND: \"\n%s", r)
	}
}

// writeRandom writes n pseudo-random bytes to path, streaming, so a 1 GiB
// file does not need 1 GiB of memory.
func writeRandom(t testing.TB, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var seed [32]byte
	copy(seed[:], fmt.Sprintf("%s/%d", path, n))
	if _, err := io.CopyN(f, rand.NewChaCha8(seed), n); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeFile writes data to path.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// sameFile fails the test unless got has exactly want's bytes.
func sameFile(t testing.TB, want, got string) {
	t.Helper()
	fw, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	fg, err := os.Open(got)
	if err != nil {
		t.Errorf("destination: %v", err)
		return
	}
	defer fg.Close()
	bw, bg := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; {
		nw, errW := io.ReadFull(fw, bw)
		ng, errG := io.ReadFull(fg, bg)
		if nw != ng || !bytes.Equal(bw[:nw], bg[:ng]) {
			i := 0
			for i < min(nw, ng) && bw[i] == bg[i] {
				i++
			}
			t.Errorf("%s differs from %s at byte %d", got, want, off+int64(i))
			return
		}
		off += int64(nw)
		if errW != nil || errG != nil { // io.EOF or io.ErrUnexpectedEOF: both ended together
			return
		}
	}
}

// fileCRC is the CRC32C (Castagnoli) of a file, computed independently of rxfer.
func fileCRC(t testing.TB, path string) uint32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return h.Sum32()
}

// wantEntries fails the test unless dir holds exactly names (so no
// *.rxfer-partial-* file and nothing else was left behind).
func wantEntries(t testing.TB, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	names = slices.Sorted(slices.Values(names))
	if !slices.Equal(got, names) {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// healthStatus asks the daemon's gRPC health service about the whole server.
func healthStatus(t testing.TB, addr string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check of %s: %v", addr, err)
	}
	return resp.GetStatus()
}

// system runs a host tool (mount, ip, ...) and returns its combined output.
func system(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// mountTmpfs mounts a tmpfs of the given size (mount's syntax: 1m, 2g) on a
// new directory and unmounts it when the test ends, after the daemons
// started later have stopped. It skips the test when it cannot mount.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := system("mount", "-t", "tmpfs", "-o", "size="+size, "rxfer-e2e", dir); err != nil {
		t.Skipf("skipped: cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := system("umount", dir); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// firstMoving starts `rxfer cp --json args...` and returns the run and a
// channel that receives its first MOVING event with bytes_done > 0 — over
// transport, unless that is TRANSPORT_UNSPECIFIED.
func firstMoving(t *testing.T, transport pb.Transport, args ...string) (*running, <-chan *pb.TransferInfo) {
	t.Helper()
	moving := make(chan *pb.TransferInfo, 1)
	var once sync.Once
	r := startRxfer(t, "", func(line string) {
		var e pb.TransferInfo
		if protojson.Unmarshal([]byte(line), &e) == nil && e.State == pb.State_STATE_MOVING && e.BytesDone > 0 &&
			(transport == pb.Transport_TRANSPORT_UNSPECIFIED || e.Transport == transport) {
			once.Do(func() { moving <- &e })
		}
	}, append([]string{"cp", "--json"}, args...)...)
	return r, moving
}
