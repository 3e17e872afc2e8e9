package rdma

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/testbedenv"
)

// twoVMPort is the plain TCP port the two-VM test exchanges endpoints on
// (not rxfer's, nor verbs' test port).
const twoVMPort = "7481"

// twoVMHello is what each VM sends the other: the sender its endpoint, the
// receiver its endpoint and slots. Plain TCP between two test VMs stands in
// for the authenticated control plane.
type twoVMHello struct {
	Endpoint EndpointInfo
	Slots    []RemoteBuffer
}

// TestTwoVMTransfer16MiB runs in both VMs of `rxfer-testbed -vms 2`: vm1
// sends a 16 MiB file in 1 MiB chunks to vm0, which verifies every chunk
// and then the whole file.
func TestTwoVMTransfer16MiB(t *testing.T) {
	if os.Getenv("RXFER_VM_COUNT") != "2" {
		t.Skip("needs two testbed VMs: make testbed-2vm TESTBED_PKGS=./rdma/ (rxfer-testbed -vms 2)")
	}
	requireDevice(t)
	const size, chunkSize = 16 << 20, 1 << 20
	receiver := os.Getenv("RXFER_VM_INDEX") == "0"
	peerIP, err := netip.ParseAddr(os.Getenv("RXFER_PEER_IP"))
	if err != nil {
		t.Fatalf("RXFER_PEER_IP: %v", err)
	}
	dir := t.TempDir()
	// Both VMs generate the same file from the same seed.
	src, data, chunks := sourceFile(t, dir, size, chunkSize, 16)
	conn := testbedenv.TwoVMConnect(t, twoVMPort, receiver)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Minute))
	rd := bufio.NewReader(conn)
	enc, dec := json.NewEncoder(conn), json.NewDecoder(rd)

	if receiver {
		var hello twoVMHello
		if err := dec.Decode(&hello); err != nil {
			t.Fatalf("reading the sender's endpoint: %v", err)
		}
		sink := newTestSink(t, dir)
		landed := make(chan error, 2*len(chunks))
		sink.onLand = func(_ chunk.Chunk, err error) { landed <- err }
		r, info, slots, err := NewReceiver(Options{}, hello.Endpoint, ReceiverConfig{Sink: sink, Slots: 8, SlotSize: chunkSize})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		t.Logf("receiver %s QPN %#x GID %v (index %d), MTU %d; sender %v QPN %#x, MTU %d", info.Device, info.QPN,
			info.Addr(), info.GIDIndex, info.MTU, hello.Endpoint.Addr(), hello.Endpoint.QPN, hello.Endpoint.MTU)
		if err := enc.Encode(twoVMHello{Endpoint: info, Slots: slots}); err != nil {
			t.Fatal(err)
		}
		for range chunks {
			select {
			case err := <-landed:
				if err != nil {
					t.Errorf("landed: %v", err)
				}
			case <-time.After(2 * time.Minute):
				t.Fatalf("waiting for chunks; receiver: %v", r.Err())
			}
		}
		r.Close()
		got, err := os.ReadFile(sink.f.Name())
		if err != nil {
			t.Fatal(err)
		}
		verdict := "ok"
		if i := testbedenv.FirstDiff(got, data); i >= 0 {
			verdict = fmt.Sprintf("mismatch at byte %d", i)
			t.Errorf("received file differs at byte %d", i)
		}
		fmt.Fprintln(conn, verdict)
		t.Logf("received and verified %d MiB from %v", size>>20, peerIP)
		return
	}

	s, info, err := NewSender(Options{}, peerIP)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := enc.Encode(twoVMHello{Endpoint: info}); err != nil {
		t.Fatal(err)
	}
	var hello twoVMHello
	if err := dec.Decode(&hello); err != nil {
		t.Fatalf("reading the receiver's endpoint: %v", err)
	}
	if err := s.Connect(hello.Endpoint, hello.Slots); err != nil {
		t.Fatal(err)
	}
	res := runSend(t, s, Source{File: src}, chunks, 0, nil)
	if res.err != nil {
		t.Fatalf("Send: %v", res.err)
	}
	for _, c := range chunks {
		if v := res.verdict[c.Index]; len(v) != 1 || v[0] != nil {
			t.Errorf("chunk %d: %v", c.Index, v)
		}
	}
	line, err := rd.ReadString('\n')
	if err != nil || line != "ok\n" {
		t.Fatalf("receiver's verdict: %q, %v", strings.TrimSpace(line), err)
	}
	t.Logf("sent %d MiB to %v, verified by the receiver: %v, %.1f MB/s", size>>20, peerIP,
		res.elapsed.Round(time.Millisecond), float64(size)/res.elapsed.Seconds()/1e6)
}
