// Package testbedenv is what tests share about the rdma_rxe testbed (see
// testbed/README.md): whether they run inside it, the device's resource
// counts, and the control connection between the two VMs.
package testbedenv

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Device is the Soft-RoCE device the testbed creates on eth0.
const Device = "rxe0"

// Active reports whether the test runs inside the testbed, where a test
// that claims RDMA must fail, not skip, when the device is missing.
func Active() bool { return os.Getenv("RXFER_TESTBED") == "1" }

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
