package rdma

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	"github.com/rxfer/rxfer/verbs"
)

// EndpointInfo is what a peer needs to connect its QP to ours; it is sent over
// the (authenticated) control plane.
type EndpointInfo struct {
	Device   string
	QPN, PSN uint32 // PSN random (crypto/rand), 24 bits
	GID      [16]byte
	GIDIndex int
	MTU      int // active MTU in bytes
	// ConnectedQPN, when not 0, offers a queue pair that is still connected
	// (RTS) to the peer's QPN ConnectedQPN from an earlier transfer
	// ([Sender.Park]): a peer that kept that endpoint parked
	// ([Receiver.Park]) may resume it (ReceiverConfig.Resume); otherwise it
	// connects a fresh one to QPN/PSN as usual and the sender reconnects.
	ConnectedQPN uint32
}

// RemoteBuffer is one registered receive slot the sender may WRITE into. Its
// RKey is a capability: never log it.
type RemoteBuffer struct {
	Addr uint64
	RKey uint32
	Len  uint32
}

// String prints a buffer without its rkey.
func (b RemoteBuffer) String() string {
	return fmt.Sprintf("{addr %#x len %d rkey <redacted>}", b.Addr, b.Len)
}

// GoString keeps %#v from printing the rkey too.
func (b RemoteBuffer) GoString() string { return "rdma.RemoteBuffer" + b.String() }

// Addr returns the IP address the endpoint's GID maps to.
func (e EndpointInfo) Addr() netip.Addr { return netip.AddrFrom16(e.GID).Unmap() }

// mtuFromBytes converts a byte MTU to the verbs enum.
func mtuFromBytes(n int) (verbs.MTU, bool) {
	for m := verbs.MTU256; m <= verbs.MTU4096; m++ {
		if m.Bytes() == n {
			return m, true
		}
	}
	return 0, false
}

// randomPSN returns a random 24-bit packet sequence number.
func randomPSN() (uint32, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b[:]) & 0xffffff, nil
}

// endpoint is one side of the RC connection: the device, a PD of its own, one
// CQ for sends and receives, the QP and the control-message buffers.
type endpoint struct {
	sel  *selection
	pd   *verbs.ProtectionDomain
	cq   *verbs.CompletionQueue
	qp   *verbs.QueuePair
	ctrl *verbs.MemoryRegion // nSend send buffers, then nRecv receive buffers, msgLen each
	info EndpointInfo

	access       verbs.AccessFlags // what the peer may do through our QP
	nSend, nRecv int

	// The device's asynchronous events, read by watch until close.
	events    *verbs.AsyncEvents
	watchDone chan struct{}
	lost      atomic.Pointer[error] // the event that broke the endpoint
	lostC     chan struct{}         // closed once lost is set
}

// openEndpoint selects the device, allocates PD, CQ, QP (moved to INIT with
// access) and the control buffers, and posts the receives.
func openEndpoint(opt Options, peer netip.Addr, sendWR, recvWR int, access verbs.AccessFlags) (_ *endpoint, err error) {
	sel, err := selectDevice(opt, peer)
	if err != nil {
		return nil, err
	}
	e := &endpoint{sel: sel, nSend: sendWR, nRecv: recvWR, access: access}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	ctx := sel.ctx
	if e.pd, err = ctx.AllocPD(); err != nil {
		return nil, err
	}
	if e.cq, err = ctx.CreateCQ(sendWR + recvWR); err != nil {
		return nil, err
	}
	if e.qp, err = e.pd.CreateQP(verbs.QPConfig{SendCQ: e.cq, RecvCQ: e.cq, MaxSendWR: sendWR, MaxRecvWR: recvWR}); err != nil {
		return nil, err
	}
	if err = e.qp.Init(sel.port, access); err != nil {
		return nil, err
	}
	if e.ctrl, err = e.pd.AllocMemoryRegion((sendWR+recvWR)*msgLen, verbs.AccessLocalWrite); err != nil {
		return nil, err
	}
	for i := range recvWR {
		if err = e.postRecv(i); err != nil {
			return nil, err
		}
	}
	psn, err := randomPSN()
	if err != nil {
		return nil, err
	}
	e.info = EndpointInfo{
		Device: ctx.Name(), QPN: e.qp.QPN(), PSN: psn, GID: sel.gid.GID, GIDIndex: sel.gid.Index, MTU: sel.mtu.Bytes(),
	}
	if e.events, err = ctx.AsyncEvents(); err != nil {
		return nil, err
	}
	e.watchDone, e.lostC = make(chan struct{}), make(chan struct{})
	go e.watch()
	return e, nil
}

// watch reads the device's asynchronous events until close. An event that
// means this endpoint cannot carry data any more — the device failed, our
// port went down, our QP or CQ hit an error — is remembered (Lost) and moves
// the QP to the error state, so that work in flight completes with
// WR_FLUSH_ERR at once instead of after the transport's retries run out, and
// the engine fails over naming the event.
func (e *endpoint) watch() {
	defer close(e.watchDone)
	for {
		ev, err := e.events.Next(context.Background())
		if err != nil {
			return // closed
		}
		if !e.fatal(ev) {
			continue
		}
		lost := fmt.Errorf("%w: %s reported %v", ErrBroken, e.info.Device, ev)
		if e.lost.CompareAndSwap(nil, &lost) {
			e.qp.SetError()
			close(e.lostC)
		}
	}
}

// fatal tells whether ev concerns this endpoint and ends its usefulness.
func (e *endpoint) fatal(ev verbs.AsyncEvent) bool {
	switch ev.Type {
	case verbs.EventDeviceFatal, verbs.EventCQErr:
		return true
	case verbs.EventPortErr:
		return ev.Port == e.sel.port
	case verbs.EventQPFatal, verbs.EventQPReqErr, verbs.EventQPAccessErr:
		return ev.QPN == e.qp.QPN()
	}
	return false
}

// lostErr returns the event that broke the endpoint, or nil.
func (e *endpoint) lostErr() error {
	if p := e.lost.Load(); p != nil {
		return *p
	}
	return nil
}

// WRIDs carry the kind of work request in the top byte.
const (
	wrRecv  = 1 << 56
	wrSend  = 2 << 56
	wrWrite = 3 << 56
	wrProbe = 4 << 56 // a zero-length WRITE that checks the receiver is still there
	wrKind  = 0xff << 56
)

func (e *endpoint) recvBuf(i int) []byte {
	off := (e.nSend + i) * msgLen
	return e.ctrl.Bytes()[off : off+msgLen]
}

func (e *endpoint) postRecv(i int) error {
	return e.qp.PostRecv(verbs.RecvWR{WRID: wrRecv | uint64(i), Local: e.ctrl.SGE((e.nSend+i)*msgLen, msgLen)})
}

// sendMsg returns a signaled SEND of control message buffer i (< nSend),
// filled by put. The caller owns buffer i until the SEND completes.
func (e *endpoint) sendMsg(i int, wrid uint64, put func([]byte)) verbs.SendWR {
	put(e.ctrl.Bytes()[i*msgLen : (i+1)*msgLen])
	return verbs.SendWR{WRID: wrid, Opcode: verbs.OpSend, Local: e.ctrl.SGE(i*msgLen, msgLen), Signaled: true}
}

// reset takes the QP back to RESET and INIT, discards any completion left
// on the CQ (the endpoint must be idle: no work request outstanding), reposts
// every receive, ready for connect to a new peer (with e.info.PSN).
func (e *endpoint) reset() error {
	if err := e.qp.Reset(); err != nil {
		return err
	}
	wcs := make([]verbs.WorkCompletion, 64)
	for {
		n, err := e.cq.Poll(wcs)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	if err := e.qp.Init(e.sel.port, e.access); err != nil {
		return err
	}
	for i := range e.nRecv {
		if err := e.postRecv(i); err != nil {
			return err
		}
	}
	return nil
}

// connect takes the QP from INIT through RTR to RTS, addressed to remote.
func (e *endpoint) connect(remote EndpointInfo) error {
	cfg, peer, err := e.connectConfig(remote)
	if err != nil {
		return err
	}
	if err := e.qp.ReadyToReceive(cfg, peer); err != nil {
		return err
	}
	return e.qp.ReadyToSend(cfg)
}

// connectConfig checks that remote can talk to us and returns the connection
// parameters, with every default of verbs.ConnectConfig spelled out (verbs
// applies them only in QueuePair.Connect, which also does RESET→INIT).
func (e *endpoint) connectConfig(remote EndpointInfo) (verbs.ConnectConfig, verbs.PeerInfo, error) {
	local, peerAddr := e.info.Addr(), remote.Addr()
	rmtu, ok := mtuFromBytes(remote.MTU)
	switch {
	case !ok:
		return verbs.ConnectConfig{}, verbs.PeerInfo{}, fmt.Errorf("%w: peer MTU %d is not a RoCE MTU (256..4096)", ErrMismatch, remote.MTU)
	case remote.QPN == 0 || remote.QPN > 0xffffff || remote.PSN > 0xffffff:
		return verbs.ConnectConfig{}, verbs.PeerInfo{}, fmt.Errorf("%w: peer QPN %#x / PSN %#x out of range", ErrMismatch, remote.QPN, remote.PSN)
	case verbs.GID(remote.GID).IsZero():
		return verbs.ConnectConfig{}, verbs.PeerInfo{}, fmt.Errorf("%w: peer sent no GID", ErrMismatch)
	case local.Is4() != peerAddr.Is4():
		return verbs.ConnectConfig{}, verbs.PeerInfo{}, fmt.Errorf("%w: GID family: local %s GID %v (index %d), peer %s GID %v (index %d)",
			ErrMismatch, family(local), local, e.info.GIDIndex, family(peerAddr), peerAddr, remote.GIDIndex)
	case local.IsLinkLocalUnicast() != peerAddr.IsLinkLocalUnicast():
		return verbs.ConnectConfig{}, verbs.PeerInfo{}, fmt.Errorf("%w: GID scope: local %v, peer %v (one link-local, one global)", ErrMismatch, local, peerAddr)
	}
	mtu := min(e.sel.mtu, rmtu)
	cfg := verbs.ConnectConfig{
		Port: e.sel.port, GIDIndex: e.info.GIDIndex, PSN: e.info.PSN, Access: e.access, MTU: mtu,
		HopLimit: 64, Timeout: verbs.DefaultTimeout, RetryCount: verbs.DefaultRetryCount, RNRRetry: verbs.DefaultRNRRetry, MinRNRTimer: verbs.DefaultMinRNRTimer, MaxRdAtomic: 1,
	}
	peer := verbs.PeerInfo{QPN: remote.QPN, PSN: remote.PSN, GID: verbs.GID(remote.GID), GIDIndex: remote.GIDIndex, MTU: rmtu}
	return cfg, peer, nil
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// close destroys everything child first: QP, MRs, CQ, PD, device.
func (e *endpoint) close(mrs ...*verbs.MemoryRegion) error {
	var errs []error
	if e.events != nil {
		e.events.Close()
		if e.watchDone != nil {
			<-e.watchDone // watch uses the QP and the context
		}
	}
	if e.qp != nil {
		errs = append(errs, e.qp.Close())
	}
	for _, mr := range mrs {
		if mr != nil {
			errs = append(errs, mr.Close())
		}
	}
	if e.ctrl != nil {
		errs = append(errs, e.ctrl.Close())
	}
	if e.cq != nil {
		errs = append(errs, e.cq.Close())
	}
	if e.pd != nil {
		errs = append(errs, e.pd.Close())
	}
	if e.sel != nil {
		errs = append(errs, e.sel.ctx.Close())
	}
	return errors.Join(errs...)
}
