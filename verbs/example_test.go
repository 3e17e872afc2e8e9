package verbs_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/rxfer/rxfer/verbs"
)

// Example shows one side of an RDMA WRITE: open the device, register a
// source buffer, create a CQ and an RC QP, connect it with the peer's info
// (exchanged over the control plane), write, and wait for the completion.
// Close runs child first. It is only compiled: it needs a device and a peer,
// which rc_test.go sets up in the testbed.
func Example() {
	dev, err := verbs.Open("rxe0")
	if err != nil {
		log.Fatal(err) // see ExampleOpen for telling "no RDMA here" apart
	}
	defer dev.Close()
	pd, err := dev.AllocPD()
	if err != nil {
		log.Fatal(err)
	}
	defer pd.Close()
	src, err := pd.AllocMemoryRegion(1<<20, 0) // a WRITE source needs local read only
	if err != nil {
		log.Fatal(err)
	}
	defer src.Close()
	cq, err := dev.CreateCQ(64)
	if err != nil {
		log.Fatal(err)
	}
	defer cq.Close()
	qp, err := pd.CreateQP(verbs.QPConfig{SendCQ: cq, RecvCQ: cq})
	if err != nil {
		log.Fatal(err)
	}
	defer qp.Close()

	local, err := qp.LocalInfo(1, 1, 0x123456) // port 1, GID index 1 (RoCE v2), random PSN
	if err != nil {
		log.Fatal(err)
	}
	peer, remoteAddr, rkey := exchange(local) // over the authenticated control plane
	if err := qp.Connect(verbs.ConnectConfig{GIDIndex: 1, PSN: local.PSN}, peer); err != nil {
		log.Fatal(err)
	}
	err = qp.PostSend(verbs.SendWR{WRID: 0, Opcode: verbs.OpWrite, Local: src.SGE(0, src.Len()),
		RemoteAddr: remoteAddr, RKey: rkey, Signaled: true})
	if err != nil {
		log.Fatal(err)
	}
	wcs := make([]verbs.WorkCompletion, 1)
	if _, err := cq.Wait(context.Background(), wcs); err != nil {
		log.Fatal(err)
	}
	if err := wcs[0].Err(); err != nil {
		log.Fatal(err) // a *verbs.CompletionError, see ExampleWorkCompletion_Err
	}
}

// ExampleOpen tells "no RDMA here" from a real failure: a missing device
// and a build without cgo both mean the caller should use another transport.
func ExampleOpen() {
	dev, err := verbs.Open("nosuch0")
	switch {
	case errors.Is(err, verbs.ErrNoDevice), errors.Is(err, verbs.ErrNotSupported):
		fmt.Println("no RDMA device nosuch0: use TCP")
	case err != nil:
		fmt.Println("RDMA failed:", err)
	default:
		fmt.Println("opened", dev.Name())
		dev.Close()
	}
	// Output: no RDMA device nosuch0: use TCP
}

// ExampleWorkCompletion_Err shows the error a failed work request completes
// with: it names the request, the QP and the status, and errors.Is matches
// the status.
func ExampleWorkCompletion_Err() {
	wc := verbs.WorkCompletion{WRID: 3, QPN: 0x11, Status: verbs.WCRemAccessErr}
	err := wc.Err()
	fmt.Println(err)
	fmt.Println(errors.Is(err, verbs.WCRemAccessErr))
	// Output:
	// verbs: work request 0x3 on QP 0x11: REM_ACCESS_ERR (remote access error)
	// true
}

// exchange stands for the control plane: send ours, receive the peer's.
func exchange(verbs.PeerInfo) (peer verbs.PeerInfo, addr uint64, rkey uint32) { return }
