package fallback

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// listenInNetns creates a fresh network namespace joined to the test's namespace by a
// veth pair and starts a Listener inside it (a socket stays in the namespace it was
// created in). It returns the listener, whose address is reachable over the veth.
// Similar to: ip netns add NS; ip link add A type veth peer name B netns NS.
func listenInNetns(t *testing.T) *Listener {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating network namespaces needs root (run go test as root to cover the veth path)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: iproute2 (ip) not installed")
	}
	id := os.Getpid() % 200
	ns, host, peer := fmt.Sprintf("rxft-%d", os.Getpid()), fmt.Sprintf("rxfth%d", id), fmt.Sprintf("rxftp%d", id)
	hostIP, peerIP := fmt.Sprintf("10.99.%d.1", 20+id), fmt.Sprintf("10.99.%d.2", 20+id)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	run("addr", "add", hostIP+"/24", "dev", host)
	run("link", "set", host, "up")
	run("-n", ns, "addr", "add", peerIP+"/24", "dev", peer)
	run("-n", ns, "link", "set", peer, "up")
	run("-n", ns, "link", "set", "lo", "up")

	var l *Listener
	var lerr error
	func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			t.Fatal(err)
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			runtime.UnlockOSThread()
			t.Fatal(err)
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			t.Fatalf("setns: %v", err)
		}
		l, lerr = Listen(peerIP+":0", slog.New(slog.NewTextHandler(tWriter{t}, nil)))
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			return // leave the thread locked: it dies with this goroutine instead of being reused in the wrong namespace
		}
		runtime.UnlockOSThread()
	}()
	if lerr != nil {
		t.Fatal(lerr)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestAcrossNetns(t *testing.T) {
	l := listenInNetns(t)
	for _, mode := range []SendMode{SendFile, ReadWrite} {
		t.Run(mode.String(), func(t *testing.T) {
			fx := newFixture(t, 16<<20+5, 1<<20)
			tok := expect(t, l, fx.sink)
			res := drive(t.Context(), l.Addr().String(), tok, fx, 0, SendOptions{Mode: mode})
			if res.err != nil {
				t.Fatalf("Send over veth: %v", res.err)
			}
			fx.checkDest(t)
		})
	}
}
