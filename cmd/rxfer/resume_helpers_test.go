package main

// Helpers for the resume tests: daemons that can be killed with SIGKILL and
// started again on the same root and addresses, the journal of a kept
// partial file, and the events of `rxfer cp --json`.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

// killable is an `rxfer serve` the test may kill -9 and start again.
type killable struct {
	t      *testing.T
	cfg    daemonConfig
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	*daemon
}

// startKillable starts `rxfer serve` with cfg (Root and fixed Listen and
// DataListen addresses required, so a restart is the same node); the test's
// end stops it with SIGTERM.
func startKillable(t *testing.T, cfg daemonConfig) *killable {
	t.Helper()
	requireBinary(t)
	k := &killable{t: t, cfg: cfg}
	k.start()
	t.Cleanup(func() {
		if k.cmd == nil {
			return
		}
		k.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-k.exited:
		case <-time.After(stopTimeout):
			k.cmd.Process.Kill()
			<-k.exited
			t.Errorf("daemon %s did not exit within %v of SIGTERM", cfg.ID, stopTimeout)
		}
		if t.Failed() {
			t.Logf("daemon %s stderr (last run):\n%s", cfg.ID, k.stderr)
		}
	})
	return k
}

func (k *killable) start() {
	t := k.t
	t.Helper()
	args := []string{"serve", "--root", k.cfg.Root, "--listen", k.cfg.Listen, "--data-listen", k.cfg.DataListen, "--node-id", k.cfg.ID,
		"--metrics-listen", "127.0.0.1:0", "--drain-timeout", "0"}
	args = append(args, k.cfg.Extra...)
	cmd := command(context.Background(), k.cfg.NS, args...)
	k.stderr = &syncBuffer{}
	cmd.Stderr = k.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	ready := make(chan []string, 1)
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			ready <- readyLine.FindStringSubmatch(sc.Text())
		}
		close(ready)
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(exited)
	}()
	k.cmd, k.exited = cmd, exited
	select {
	case m, ok := <-ready:
		if !ok || m == nil {
			t.Fatalf("daemon %v: no ready line\nstderr:\n%s", cmd.Args, k.stderr)
		}
		k.daemon = &daemon{Root: k.cfg.Root, Control: m[1], Data: m[2], stderr: k.stderr}
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		t.Fatalf("daemon %v: not ready within %v\nstderr:\n%s", cmd.Args, readyTimeout, k.stderr)
	}
}

// kill9 kills the daemon with SIGKILL and waits until it is gone.
func (k *killable) kill9() {
	k.cmd.Process.Kill()
	<-k.exited
}

// restart starts the daemon again after kill9.
func (k *killable) restart() { k.start() }

// journaledBytes is what the journal of the kept partial file for the
// final name name in dir records (0 if there is none).
func journaledBytes(t testing.TB, dir, name string) int64 {
	t.Helper()
	n, err := readJournaled(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// readJournaled is journaledBytes without a test: for goroutines that may
// not call t.Fatal.
func readJournaled(dir, name string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".journal") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return 0, err
		}
		h, recs, err := transfer.ParseJournal(b)
		if err != nil || h.FinalName != name {
			continue
		}
		var n int64
		for _, r := range recs {
			n += int64(r.Length)
		}
		return n, nil
	}
	return 0, nil
}

// cpEvents are the events of one `rxfer cp --json` run.
type cpEvents struct {
	mu     sync.Mutex
	events []*pb.TransferInfo
}

// onLine parses a --json line into an event (other lines are ignored).
func (c *cpEvents) onLine(line string) *pb.TransferInfo {
	var e pb.TransferInfo
	if protojson.Unmarshal([]byte(line), &e) != nil {
		return nil
	}
	c.mu.Lock()
	c.events = append(c.events, &e)
	c.mu.Unlock()
	return &e
}

// last is the last event (nil if none).
func (c *cpEvents) last() *pb.TransferInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) == 0 {
		return nil
	}
	return c.events[len(c.events)-1]
}

// finalEvent parses the last line of a finished `rxfer cp --json`.
func finalEvent(t testing.TB, r result) *pb.TransferInfo {
	t.Helper()
	var e pb.TransferInfo
	if err := protojson.Unmarshal([]byte(r.lastLine()), &e); err != nil {
		t.Fatalf("last line is no event: %v\n%s", err, r)
	}
	return &e
}

// shapeLink limits the veth of NS1 to rate (tc's syntax, e.g. 1500mbit),
// so a copy lasts long enough to be interrupted at a chosen point.
func shapeLink(t *testing.T, ns, rate string) {
	t.Helper()
	out, err := system("ip", "-n", ns, "-o", "link", "show", "type", "veth")
	if err != nil {
		t.Fatalf("ip link: %v: %s", err, out)
	}
	dev, _, _ := strings.Cut(strings.TrimSpace(strings.SplitN(string(out), ":", 3)[1]), "@")
	if out, err := system("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", strings.TrimSpace(dev), "root", "tbf",
		"rate", rate, "burst", "1mb", "latency", "100ms"); err != nil {
		t.Skipf("skipped: cannot shape the link with tc: %v: %s", err, out)
	}
}

// describeKill is a line about one iteration of a kill loop.
func describeKill(i int, who string, at, total, resumed, moved, allowed int64) string {
	return fmt.Sprintf("iteration %2d: killed the %s at %3d%%, rerun resumed %s and moved %s (allowed %s)",
		i, who, at*100/max(total, 1), size(resumed), size(moved), size(allowed))
}

// wantOnlyPartials fails the test unless dir holds nothing but partial
// files and journals (kept for a resume): nothing at a final path.
func wantOnlyPartials(t testing.TB, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".rxfer-partial-") {
			t.Errorf("%s holds %q, want only kept partial files", dir, e.Name())
		}
	}
}
