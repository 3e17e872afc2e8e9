package verbs_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rxfer/rxfer/internal/testbedenv"
	"github.com/rxfer/rxfer/verbs"
)

// twoVMHello is what each side of TestTwoVMWrite16MiB sends the other over
// TCP before the RDMA part: its QP and, from the receiver, the buffer.
type twoVMHello struct {
	Peer  verbs.PeerInfo
	Addr  uint64
	RKey  uint32
	Bytes int
}

const twoVMPort = "7479" // not rxfer's own ports, so daemons may share the VMs

// TestTwoVMWrite16MiB runs in both VMs of `rxfer-testbed -vms 2`: vm0
// registers a 16 MiB buffer, vm1 writes a known pattern into it across the
// virtual link in 1 MiB WRITEs (the last WITH_IMM) and vm0 verifies it.
func TestTwoVMWrite16MiB(t *testing.T) {
	if os.Getenv("RXFER_VM_COUNT") != "2" {
		t.Skip("needs two testbed VMs: make testbed-2vm (rxfer-testbed -vms 2)")
	}
	const total, chunk = 16 << 20, 1 << 20
	receiver := os.Getenv("RXFER_VM_INDEX") == "0"
	ctx := openDevice(t)
	gid := roceV2Index(t, ctx)
	s := newSide(t, ctx)
	access := verbs.AccessFlags(0)
	if receiver {
		access = verbs.AccessLocalWrite | verbs.AccessRemoteWrite
	}
	mr, err := s.pd.AllocMemoryRegion(total, access)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, "region", mr)
	psn := uint32(0x3000)
	if receiver {
		psn = 0x4000
	}
	me, err := s.qp.LocalInfo(1, gid, psn)
	if err != nil {
		t.Fatal(err)
	}
	hello := twoVMHello{Peer: me}
	if receiver {
		hello.Addr, hello.RKey, hello.Bytes = mr.Addr(), mr.RKey(), total
	}

	conn := testbedenv.TwoVMConnect(t, twoVMPort, receiver)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Minute))
	rd := bufio.NewReader(conn)
	if err := json.NewEncoder(conn).Encode(hello); err != nil {
		t.Fatal(err)
	}
	var peer twoVMHello
	if err := json.NewDecoder(rd).Decode(&peer); err != nil {
		t.Fatalf("reading the peer's info: %v", err)
	}
	t.Logf("local %+v, peer %+v", me, peer.Peer)
	if err := s.qp.Connect(verbs.ConnectConfig{GIDIndex: gid, PSN: me.PSN, Access: access}, peer.Peer); err != nil {
		t.Fatal(err)
	}

	if receiver {
		// Post the receive for the immediate (a QP in RESET refuses it), tell
		// the writer we are ready, then wait for the immediate.
		if err := s.qp.PostRecv(verbs.RecvWR{WRID: 1}); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(conn, "ready")
		got, err := waitCompletions(t, s.cq, 1)
		if err != nil {
			t.Fatal(err)
		}
		if wc := got[0]; wc.Opcode != verbs.WCRecvRDMAWithImm || wc.Imm != total/chunk {
			t.Fatalf("completion %+v; want RECV_RDMA_WITH_IMM carrying %d", wc, total/chunk)
		}
		want := make([]byte, total)
		fill(want, 16)
		if i := testbedenv.FirstDiff(want, mr.Bytes()); i >= 0 {
			fmt.Fprintf(conn, "mismatch at byte %d\n", i)
			t.Fatalf("received data differs at byte %d", i)
		}
		fmt.Fprintln(conn, "ok")
		t.Logf("received and verified %d MiB from %s", total>>20, os.Getenv("RXFER_PEER_IP"))
		return
	}

	if line, err := rd.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("waiting for the receiver: %q, %v", line, err)
	}
	fill(mr.Bytes(), 16)
	start := time.Now()
	var wrs []verbs.SendWR
	for i := range total / chunk {
		wr := verbs.SendWR{WRID: uint64(i), Opcode: verbs.OpWrite, Local: mr.SGE(i*chunk, chunk),
			RemoteAddr: peer.Addr + uint64(i*chunk), RKey: peer.RKey}
		if i == total/chunk-1 {
			wr.Opcode, wr.Imm, wr.Signaled = verbs.OpWriteWithImm, total/chunk, true
		}
		wrs = append(wrs, wr)
	}
	if err := s.qp.PostSend(wrs...); err != nil {
		t.Fatal(err)
	}
	if _, err := waitCompletions(t, s.cq, 1); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	line, err := rd.ReadString('\n')
	if err != nil || line != "ok\n" {
		t.Fatalf("receiver's verdict: %q, %v", strings.TrimSpace(line), err)
	}
	t.Logf("wrote %d MiB to %s, verified by the receiver: %v, %.1f MB/s", total>>20,
		os.Getenv("RXFER_PEER_IP"), elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds()/1e6)
}
