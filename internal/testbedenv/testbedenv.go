// Package testbedenv is what tests share about the rdma_rxe testbed (see
// testbed/README.md): whether they run inside it, the device's resource
// counts, and the control connection between the two VMs.
package testbedenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rxfer/rxfer/verbs"
)

// Device is the Soft-RoCE device the testbed creates on eth0.
const Device = "rxe0"

// Active reports whether the test runs inside the testbed, where a test
// that claims RDMA must fail, not skip, when the device is missing.
func Active() bool { return os.Getenv("RXFER_TESTBED") == "1" }

// RequireRDMA gates a test that claims RDMA on probe, the caller's check that
// what it needs (a usable device, the rdma tool) is there. A nil probe lets
// the test go on. Otherwise the test skips on a host and fails inside the
// testbed, where everything must be there: a missing device never passes a
// test that claims RDMA.
func RequireRDMA(t testing.TB, probe error) {
	t.Helper()
	switch {
	case probe == nil:
	case Active():
		t.Fatalf("testbed: RDMA must be usable here: %v", probe)
	default:
		t.Skipf("RDMA is not usable here (%v); RDMA tests run in the testbed VM: make testbed", probe)
	}
}

// ResourceCounts returns a device's `rdma resource show` counts, e.g.
// {"pd": 1, "cq": 2, "qp": 2, "mr": 1, "ctx": 1} from
// "0: rxe0: pd 1 cq 2 qp 2 cm_id 0 mr 1 ctx 1 srq 0".
func ResourceCounts(t testing.TB, dev string) map[string]int {
	t.Helper()
	out, err := exec.Command("rdma", "resource", "show", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("rdma resource show %s: %v: %s", dev, err, out)
	}
	f := strings.Fields(string(out))
	counts := map[string]int{}
	for i := 2; i+1 < len(f); i += 2 {
		if n, err := strconv.Atoi(f[i+1]); err == nil {
			counts[f[i]] = n
		}
	}
	if len(counts) == 0 {
		t.Fatalf("cannot parse rdma resource show %s: %q", dev, out)
	}
	return counts
}

// TwoVMConnect returns a plain TCP connection between the two VMs on port:
// the VM with listen set accepts, the other dials, retrying while its peer
// boots (within two minutes).
func TwoVMConnect(t testing.TB, port string, listen bool) net.Conn {
	t.Helper()
	if listen {
		ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("RXFER_VM_IP"), port))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Minute))
		conn, err := ln.Accept()
		if err != nil {
			t.Fatalf("waiting for the peer VM: %v", err)
		}
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	addr := net.JoinHostPort(os.Getenv("RXFER_PEER_IP"), port)
	for {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn
		}
		select { // the peer VM is still booting: its listener is not up yet
		case <-ctx.Done():
			t.Fatalf("dialing the peer VM at %s: %v", addr, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// FirstDiff returns the first index where a and b differ, or -1.
func FirstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// Netdev is the netdev dev runs over, from `rdma link show` (eth0 in the
// testbed).
func Netdev(dev string) string {
	if out, err := exec.Command("rdma", "link", "show", dev+"/1").CombinedOutput(); err == nil {
		if f := strings.Fields(string(out)); len(f) > 2 && f[len(f)-2] == "netdev" {
			return f[len(f)-1]
		}
	}
	return "eth0"
}

// TakePortDown takes dev's netdev down and returns its name once dev reported
// IBV_EVENT_PORT_ERR on port 1 (failing the test if it does not within 30 s).
// When the test ends the netdev comes back up and the clean-up waits for
// IBV_EVENT_PORT_ACTIVE, so later tests find the device usable.
func TakePortDown(t testing.TB, dev string) (netdev string) {
	t.Helper()
	netdev = Netdev(dev)
	ctx, err := verbs.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	events, err := ctx.AsyncEvents()
	if err != nil {
		ctx.Close()
		t.Fatal(err)
	}
	wait := func(want verbs.AsyncEventType) error {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for {
			ev, err := events.Next(c)
			if err != nil {
				return fmt.Errorf("waiting for %v on %s port 1: %w", want, dev, err)
			}
			if ev.Type == want && ev.Port == 1 {
				return nil
			}
		}
	}
	t.Cleanup(func() {
		defer ctx.Close()
		defer events.Close()
		if out, err := exec.Command("ip", "link", "set", netdev, "up").CombinedOutput(); err != nil {
			t.Errorf("ip link set %s up: %v: %s", netdev, err, out)
			return
		}
		if err := wait(verbs.EventPortActive); err != nil {
			t.Errorf("%s came back up but %v", netdev, err)
		}
	})
	if out, err := exec.Command("ip", "link", "set", netdev, "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s down: %v: %s", netdev, err, out)
	}
	if err := wait(verbs.EventPortErr); err != nil {
		t.Fatalf("%s went down but %v", netdev, err)
	}
	return netdev
}
