package main

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"path/filepath"
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
)

// drainTimeout is the drain the test daemon gets: far longer than a 256 MiB
// loopback copy takes even on a starved host (a failure guard, not a timing).
const drainTimeout = 5 * time.Minute

// drainingDaemon is an `rxfer serve` whose exit the test observes itself
// (startDaemon's Stop signals it again, which would end a drain at once).
type drainingDaemon struct {
	Control string
	Root    string
	cmd     *exec.Cmd
	exited  chan error // receives cmd.Wait's result once
	stderr  *syncBuffer
}

func startDrainingDaemon(t *testing.T) *drainingDaemon {
	t.Helper()
	requireBinary(t)
	d := &drainingDaemon{Root: t.TempDir(), exited: make(chan error, 1), stderr: &syncBuffer{}}
	d.cmd = command(context.Background(), "", "serve", "--root", d.Root, "--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0",
		"--metrics-listen", "", "--node-id", "draining", "--drain-timeout", drainTimeout.String())
	d.cmd.Stderr = d.stderr
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			ready <- readyLine.FindStringSubmatch(sc.Text())
		}
		close(ready)
		io.Copy(io.Discard, stdout)
		d.exited <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		d.cmd.Process.Kill() // a no-op once it exited, as the test expects
		if t.Failed() {
			t.Logf("draining daemon stderr:\n%s", d.stderr)
		}
	})
	select {
	case m := <-ready:
		if m == nil {
			t.Fatalf("draining daemon: no ready line\n%s", d.stderr)
		}
		d.Control = m[1]
	case <-time.After(readyTimeout):
		t.Fatalf("draining daemon not ready within %v\n%s", readyTimeout, d.stderr)
	}
	return d
}

// TestDrain sends SIGTERM to a destination daemon while a copy moves: its
// health turns NOT_SERVING, a new copy to it is refused with Unavailable,
// the running copy finishes intact and the daemon then exits 0 by itself.
func TestDrain(t *testing.T) {
	t.Parallel()
	a := startDaemon(t, daemonConfig{ID: "drain-src"})
	b := startDrainingDaemon(t)
	writeRandom(t, a.Path("big.bin"), 256<<20)
	writeRandom(t, a.Path("small.bin"), 10_000)

	// Health as a stream: the test waits for the change, not for time.
	conn, err := grpc.NewClient(b.Control, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before the drain: %v, %v; want SERVING", st, err)
	}

	// The signal goes at the MOVING event, which comes before any progress:
	// a 256 MiB copy over loopback can end before the first progress event.
	moving := make(chan struct{})
	var once sync.Once
	r := startRxfer(t, "", func(line string) {
		var e pb.TransferInfo
		if protojson.Unmarshal([]byte(line), &e) == nil && e.State == pb.State_STATE_MOVING {
			once.Do(func() { close(moving) })
		}
	}, "cp", "--json", "--chunk-size", "65536", a.At("/big.bin"), b.Control+":/big.bin")
	select {
	case <-moving:
	case <-r.scanned:
		t.Fatalf("the copy ended before it moved:\n%s", r.Wait(t))
	}
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if st, err := watch.Recv(); err != nil || st.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after SIGTERM: %v, %v; want NOT_SERVING", st, err)
	}
	refused := rxfer(t, "cp", "--retries", "0", a.At("/small.bin"), b.Control+":/small.bin")
	select {
	case <-r.scanned:
		t.Skipf("the copy finished before the new one was tried; the refusal proves nothing:\n%s", refused)
	default:
	}
	wantFailure(t, refused, 1, "Unavailable", "shutting down")

	if res := r.Wait(t); res.Code != 0 {
		t.Fatalf("the copy running at SIGTERM did not finish:\n%s", res)
	}
	sameFile(t, a.Path("big.bin"), filepath.Join(b.Root, "big.bin"))
	select {
	case err := <-b.exited:
		if err != nil {
			t.Errorf("the drained daemon exited with %v", err)
		}
	case <-time.After(drainTimeout):
		t.Fatalf("the daemon did not exit within the drain timeout after its last transfer")
	}
	if log := b.stderr.String(); !strings.Contains(log, "drained: no transfer running") {
		t.Errorf("the daemon did not say it drained:\n%s", log)
	}
}
