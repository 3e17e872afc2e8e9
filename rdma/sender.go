package rdma

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/rxfer/rxfer/verbs"
)

// Send queue limits of a Sender.
const (
	// DefaultDepth is the number of chunks in flight when Send's depth is 0
	// (bounded by the number of slots).
	DefaultDepth = 16
	// MaxDepth bounds Send's depth: each chunk in flight takes two send work
	// requests (WRITE + SEND), a receive for its ack and a staging buffer.
	MaxDepth = 64
)

// Sender is the writing side of one RDMA connection. Its methods must not be
// called concurrently.
type Sender struct {
	ep        *endpoint
	slots     []RemoteBuffer
	window    bool // ConnectWindow: chunk i goes into slot i, slots are not reused
	connected bool
	broken    error // the QP failed; every later Send fails with it

	// peer is the endpoint the QP is connected to (RTS) since the last
	// Connect; parked: Park detached it from its transfer's slots.
	peer     *EndpointInfo
	qpn      uint32
	parked   bool
	clean    bool // the last Send returned nil with nothing outstanding
	probeOut bool // a liveness probe may still be outstanding

	staging *verbs.MemoryRegion // depth buffers of bufSize bytes, local access only
	bufSize int

	// pre is source memory registered ahead of the next Send
	// (RegisterSource); that Send takes it if its Source is the same memory.
	pre *verbs.MemoryRegion
}

// NewSender picks the device and GID (for the peer's IP address peer; an
// invalid netip.Addr{} accepts any usable RoCE v2 GID, IPv4 first), creates a
// PD, a CQ and an RC QP in INIT, posts the receives for acks, and returns the
// information the receiver needs.
func NewSender(opt Options, peer netip.Addr) (*Sender, EndpointInfo, error) {
	ep, err := openEndpoint(opt, peer, 2*MaxDepth+8, MaxDepth+8, verbs.AccessLocalWrite)
	if err != nil {
		return nil, EndpointInfo{}, err
	}
	return &Sender{ep: ep, qpn: ep.info.QPN}, ep.info, nil
}

// Connect moves the QP to RTR and RTS, connected to the receiver's endpoint
// (the path MTU is the smaller of both active MTUs), and remembers the
// receiver's slots. It returns an error wrapping ErrMismatch if the endpoints
// cannot talk to each other.
func (s *Sender) Connect(remote EndpointInfo, slots []RemoteBuffer) error {
	return s.connect(remote, slots, false)
}

// ConnectWindow is Connect to a window receiver (ReceiverConfig.Window): the
// chunk with index i is written into slot i (a chunk whose index has no slot,
// or that does not fit its slot, is answered with an error without being
// sent), and slots are never reused, so only the depth limits the chunks in
// flight.
func (s *Sender) ConnectWindow(remote EndpointInfo, slots []RemoteBuffer) error {
	return s.connect(remote, slots, true)
}

func (s *Sender) connect(remote EndpointInfo, slots []RemoteBuffer, window bool) error {
	if s.ep == nil {
		return errors.New("rdma: sender closed")
	}
	if s.connected {
		return errors.New("rdma: sender already connected")
	}
	if err := checkSlots(slots); err != nil {
		return err
	}
	if s.parked {
		// The receiver did not resume the parked connection (it answered
		// with a fresh QP connected to ours): reconnect our QP to it.
		if err := s.ep.reset(); err != nil {
			s.broken = fmt.Errorf("%w: resetting the queue pair: %w", ErrBroken, err)
			return s.broken
		}
		s.parked, s.peer = false, nil
	}
	if err := s.ep.connect(remote); err != nil {
		return fmt.Errorf("rdma: connecting to %s QP %#x: %w", remote.Addr(), remote.QPN, err)
	}
	s.peer = &remote
	s.slots = slices.Clone(slots)
	s.window = window
	s.connected = true
	return nil
}

func checkSlots(slots []RemoteBuffer) error {
	if len(slots) == 0 {
		return fmt.Errorf("%w: the receiver offered no slots", ErrMismatch)
	}
	for i, b := range slots {
		if b.Len == 0 || b.Addr+uint64(b.Len) < b.Addr {
			return fmt.Errorf("%w: slot %d: bad buffer %v", ErrMismatch, i, b)
		}
	}
	return nil
}

// Park detaches an idle, healthy sender from its transfer so that its
// connection can carry the next one to the same receiver: the slots (and
// their rkeys) are forgotten, the QP stays connected (RTS), its posted
// receives and staging buffers stay. It fails, leaving the sender as it was
// (to be closed), unless the last Send returned nil with nothing outstanding.
// The returned EndpointInfo is the offer for the next transfer: a new PSN
// (used only if the receiver answers with a fresh QP) and ConnectedQPN, the
// receiver QP ours is connected to.
func (s *Sender) Park() (EndpointInfo, error) {
	switch {
	case s.ep == nil || s.broken != nil:
		return EndpointInfo{}, errors.New("rdma: sender closed or broken")
	case s.ep.lostErr() != nil:
		return EndpointInfo{}, s.ep.lostErr()
	case !s.connected || s.peer == nil:
		return EndpointInfo{}, errors.New("rdma: sender not connected")
	case !s.clean || s.probeOut:
		return EndpointInfo{}, errors.New("rdma: sender's last Send did not finish cleanly")
	}
	psn, err := randomPSN()
	if err != nil {
		return EndpointInfo{}, err
	}
	s.ep.info.PSN = psn
	s.slots, s.window, s.connected, s.parked, s.clean = nil, false, false, true, false
	s.DropSource()
	return s.Offer(), nil
}

// Offer returns the endpoint to offer a receiver: for a parked sender it
// names the receiver QP it is still connected to (ConnectedQPN).
func (s *Sender) Offer() EndpointInfo {
	info := s.ep.info
	if s.parked && s.peer != nil {
		info.ConnectedQPN = s.peer.QPN
	}
	return info
}

// Device returns the name of the sender's device ("" once closed).
func (s *Sender) Device() string {
	if s.ep == nil {
		return ""
	}
	return s.ep.info.Device
}

// QPN returns our queue pair's number (also after Close).
func (s *Sender) QPN() uint32 { return s.qpn }

// Lost returns, wrapping ErrBroken, the asynchronous event of the device that
// made the sender unusable (its port went down, the device or its QP failed),
// or nil. Such an event also moves the QP to the error state, so a Send in
// progress fails at once, with this error.
func (s *Sender) Lost() error {
	if s.ep == nil {
		return nil
	}
	return s.ep.lostErr()
}

// Resume takes a parked sender's connection for a new transfer: the
// receiver resumed the endpoint ours is connected to (ReceiverConfig.Resume) and
// offered these slots; window is as for ConnectWindow. remote must be the
// same receiver QP (QPN and GID) the sender was connected to.
func (s *Sender) Resume(remote EndpointInfo, slots []RemoteBuffer, window bool) error {
	switch {
	case s.ep == nil || s.broken != nil:
		return errors.New("rdma: sender closed or broken")
	case !s.parked || s.peer == nil:
		return errors.New("rdma: Resume of a sender that is not parked")
	case remote.QPN != s.peer.QPN || remote.GID != s.peer.GID:
		return fmt.Errorf("%w: resumed receiver QP %#x at %s, ours is connected to QP %#x at %s",
			ErrMismatch, remote.QPN, remote.Addr(), s.peer.QPN, s.peer.Addr())
	}
	if err := checkSlots(slots); err != nil {
		return err
	}
	s.slots = slices.Clone(slots)
	s.window, s.connected, s.parked = window, true, false
	return nil
}

// Break moves the queue pair to the error state, as a failing link would:
// work requests in flight complete with WR_FLUSH_ERR and Send fails. It is
// safe to call while Send runs (used by tests and by failover drills).
func (s *Sender) Break() error {
	if s.ep == nil {
		return errors.New("rdma: sender closed")
	}
	return s.ep.qp.SetError()
}

// Close destroys the QP, deregisters the memory, deallocates the PD and
// closes the device. It must not be called while Send runs.
func (s *Sender) Close() error {
	if s.ep == nil {
		return nil
	}
	err := s.ep.close(s.staging, s.pre)
	s.ep, s.staging, s.pre = nil, nil, nil
	if s.broken == nil {
		s.broken = errors.New("rdma: sender closed")
	}
	return err
}

// Attach connects the sender to a receiver's answer to its offer: it
// resumes the parked connection when the receiver resumed the endpoint ours
// is still connected to ([Sender.Resume]), and otherwise connects to the
// receiver's fresh QP ([Sender.ConnectWindow] for a window, else
// [Sender.Connect], which resets a parked QP first). resumed tells which.
func (s *Sender) Attach(a Answer) (resumed bool, err error) {
	switch {
	case s.parked && s.peer != nil && s.peer.QPN != 0 && a.Resumed:
		return true, s.Resume(a.Endpoint, a.Slots, a.Window)
	case a.Window:
		return false, s.ConnectWindow(a.Endpoint, a.Slots)
	default:
		return false, s.Connect(a.Endpoint, a.Slots)
	}
}
