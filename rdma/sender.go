package rdma

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/verbs"
)

// probeAfter is how long Send waits without a completion, with chunks in
// flight, before it probes the receiver with a zero-length WRITE.
var probeAfter = 2 * time.Second

// silenceLimit is how long Send waits for any completion, with chunks in
// flight and probes unanswered, before it declares the connection broken.
var silenceLimit = 20 * time.Second

// Break moves the queue pair to the error state, as a failing link would:
// work requests in flight complete with WR_FLUSH_ERR and Send fails. It is
// safe to call while Send runs (used by tests and by failover drills).
func (s *Sender) Break() error {
	if s.ep == nil {
		return errors.New("rdma: sender closed")
	}
	return s.ep.qp.SetError()
}

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

	staging    *verbs.MemoryRegion // depth buffers of bufSize bytes, local access only
	bufSize    int
	sourceMode sourceMode

	// pre is source memory registered ahead of the next Send
	// (RegisterSource); that Send takes it if its Source is the same memory.
	pre *verbs.MemoryRegion
}

// sourceMode is where WRITEs take their bytes from.
type sourceMode int

const (
	// sourceStaging preads each chunk into a registered staging buffer.
	sourceStaging sourceMode = iota
	// sourceMmap registers a read-only mapping of the whole source file.
	sourceMmap
)

// Source is where a Send takes its chunks' bytes from.
type Source struct {
	// File is read with pread into the staging buffers unless Bytes is set.
	File *os.File
	// Bytes, when set, holds the source from offset Base on (Chunk.Offset
	// Base is Bytes[0]) and must stay valid until Send returns. By default
	// the staging buffers are filled by copying from it: a user-space copy
	// from a mapping where pread's is the kernel's (rep movsb, which qemu TCG
	// runs a byte at a time: 3–5 ms per MiB in the testbed; on hardware the
	// two cost the same), and a mapping that faults (the file shrank) fails
	// the chunk like a short read.
	Bytes []byte
	Base  int64
	// Register, with Bytes, registers Bytes (local read access) for the
	// Send and WRITEs straight from it, with no copy: for memory that is
	// cheap to register, such as a MAP_SHARED read-write mapping of a memfd
	// (milliseconds for 128 MiB). It is deregistered when Send returns.
	Register bool
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

// ConnectWindow is Connect to a window receiver ([NewWindowReceiver]): the
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

// RegisterSource registers mem (local read access only) for the next Send,
// ahead of it: a caller that knows the source memory before the receiver has
// answered (Source.Register) overlaps the registration, which pins every
// page, with the receiver's own set-up. That Send writes from it when its
// Source.Bytes is mem (else it is deregistered) and deregisters it at the
// end; Park, Close and DropSource drop it if no Send took it. mem must stay
// mapped until then (the registration pins its pages, and a new mapping at
// the same address would look like the same memory). It must not be called
// while Send runs.
func (s *Sender) RegisterSource(mem []byte) error {
	if s.ep == nil {
		return errors.New("rdma: sender closed")
	}
	s.DropSource()
	if len(mem) == 0 {
		return nil
	}
	mr, err := s.registerSource(mem)
	s.pre = mr
	return err
}

// registerSource registers source memory for local reads only: WRITEs take
// their bytes from it, nothing else may touch it.
func (s *Sender) registerSource(mem []byte) (*verbs.MemoryRegion, error) {
	mr, err := s.ep.pd.RegisterMemory(mem, 0)
	if err != nil {
		return nil, fmt.Errorf("rdma: registering the source memory: %w", err)
	}
	return mr, nil
}

// DropSource deregisters what RegisterSource registered, if no Send took it
// (before its memory is unmapped). It must not be called while Send runs.
func (s *Sender) DropSource() {
	if s.pre != nil {
		s.pre.Close()
		s.pre = nil
	}
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
// receiver resumed the endpoint ours is connected to ([ResumeReceiver]) and
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

// Send has the contract of fallback.Send: it WRITEs the chunks taken from
// chunks (their bytes taken from src at Chunk.Offset) into the receiver's slots, each
// followed by a control message, and calls done exactly once per chunk taken,
// with nil when the receiver verified the chunk, or an error: wrapping
// chunk.ErrChecksum on a CRC mismatch (the chunk may be re-sent),
// chunk.ErrReceiverIO, chunk.ErrRejected, or ErrBroken together with the
// verbs.CompletionError naming the ibv_wc_status when the QP failed. done is
// called from a goroutine of Send, in order, never concurrently with itself; it
// may put the chunk back on chunks.
//
// Send keeps pulling from chunks until it is closed or ctx ends, even after
// the QP failed (the remaining chunks are answered at once), and returns nil
// when every chunk was answered by the receiver; otherwise the QP's error or
// the context's. After a failure the QP is in the error state and the Sender
// can only be closed. depth is the number of chunks in flight (0 =
// DefaultDepth; at most MaxDepth and the number of slots). Every
// Chunk.Length must fit the slots.
func (s *Sender) Send(ctx context.Context, src Source, chunks <-chan chunk.Chunk, done func(chunk.Chunk, error), depth int) error {
	dq := newDoneQueue(done)
	defer dq.close()
	s.clean = false
	if err := s.sendPrecheck(depth); err != nil {
		return drainWith(ctx, chunks, dq, err)
	}
	if depth == 0 {
		depth = DefaultDepth
	}
	depth = min(depth, MaxDepth, len(s.slots)) // window mode: credits are the depth only
	src0, err := s.prepareSource(src, depth)
	if err != nil {
		return drainWith(ctx, chunks, dq, err)
	}
	defer src0.close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	posts := startPosters(s.ep.qp)
	defer posts.stop() // before src0.close: queued requests name its memory
	completions := make(chan wcBatch)
	var pollers sync.WaitGroup
	pollers.Go(func() { pollCQ(ctx, s.ep.cq, completions) })
	defer pollers.Wait()
	defer cancel()

	st := &sendState{
		s: s, src: src0, dq: dq, posts: posts,
		flights: make([]flight, len(s.slots)),
	}
	if !s.window {
		for i := range s.slots {
			st.freeSlots = append(st.freeSlots, len(s.slots)-1-i)
		}
	}
	for i := range depth {
		st.freeBufs = append(st.freeBufs, depth-1-i)
	}
	// A receiver that vanished between landing a chunk and acknowledging it
	// leaves nothing in flight to fail: after probeAfter without a
	// completion, a zero-length WRITE asks the fabric whether the peer's QP
	// is still there (it fails with RETRY_EXC_ERR or REM_ACCESS_ERR if not).
	probe := time.NewTimer(probeAfter)
	defer probe.Stop()
	probing := false
	lastCompletion := time.Now()
	open := true
	for open || st.inflight > 0 {
		var in <-chan chunk.Chunk
		if open && len(st.freeBufs) > 0 && (s.window || len(st.freeSlots) > 0) {
			in = chunks
		}
		var err error
		select {
		case <-probe.C:
			if st.inflight > 0 && time.Since(lastCompletion) > silenceLimit {
				err = fmt.Errorf("%w: no completion from the receiver for %v with %d chunks in flight", ErrBroken, silenceLimit, st.inflight)
			} else if st.inflight > 0 && !probing {
				rb := s.slots[0]
				err = s.ep.qp.PostSend(verbs.SendWR{WRID: wrProbe, Opcode: verbs.OpWrite, RemoteAddr: rb.Addr, RKey: rb.RKey, Signaled: true})
				probing = err == nil
			}
			probe.Reset(probeAfter)
		case c, ok := <-in:
			if !ok {
				open = false
				continue
			}
			err = st.post(c)
		case b := <-completions:
			lastCompletion = time.Now()
			err = b.err
			for _, wc := range b.wcs {
				if err != nil {
					break
				}
				if wc.WRID&wrKind == wrProbe && wc.Err() == nil {
					probing = false // the receiver is alive, only slow
					continue
				}
				err = st.complete(wc)
			}
			probe.Reset(probeAfter)
		case err = <-posts.errs:
		case <-ctx.Done():
			err = context.Cause(ctx)
		}
		if err != nil {
			err = s.fail(st, err)
			if ctx.Err() != nil || !open {
				return err
			}
			return drainWith(ctx, chunks, dq, err)
		}
	}
	s.clean, s.probeOut = true, probing
	return nil
}

func (s *Sender) sendPrecheck(depth int) error {
	switch {
	case s.broken != nil:
		return s.broken
	case !s.connected:
		return errors.New("rdma: Send before Connect")
	case depth < 0:
		return fmt.Errorf("rdma: invalid depth %d", depth)
	}
	return nil
}

// fail breaks the QP, answers the chunks in flight and returns the error
// Send returns.
func (s *Sender) fail(st *sendState, err error) error {
	var ce *verbs.CompletionError
	if lost := s.ep.lostErr(); lost != nil && !errors.Is(err, context.Canceled) {
		err = fmt.Errorf("%w (%w)", lost, err) // the flush errors are its consequence
	} else if errors.As(err, &ce) || errors.Is(err, errBadMessage) {
		err = fmt.Errorf("%w: %w", ErrBroken, err)
	}
	s.broken = err
	s.ep.qp.SetError() // outstanding work requests flush; nothing will touch the staging buffers
	for i := range st.flights {
		if f := &st.flights[i]; f.used {
			f.used = false
			st.dq.push(f.c, fmt.Errorf("chunk %d: %w", f.c.Index, err))
		}
	}
	st.inflight = 0
	return fmt.Errorf("rdma: send: %w", err)
}

// drainWith answers every chunk still coming with err until chunks is closed
// or ctx ends, and returns err (joined with ctx's cause if it ended).
func drainWith(ctx context.Context, chunks <-chan chunk.Chunk, dq *doneQueue, err error) error {
	if cause := chunk.Drain(ctx, chunks, dq.push, err); cause != nil {
		return errors.Join(err, cause)
	}
	return err
}

// flight is a chunk between its WRITE and the receiver's ack, in its slot.
type flight struct {
	c           chunk.Chunk
	buf         int
	used        bool
	sent, acked bool // SEND completed locally (the WRITE did too); ack received
	verdict     error
}

type sendState struct {
	s         *Sender
	src       *source
	dq        *doneQueue
	flights   []flight // by slot
	freeSlots []int
	freeBufs  []int
	inflight  int
	posts     *posters
}

// post WRITEs c into a free slot and announces it.
func (st *sendState) post(c chunk.Chunk) error {
	s := st.s
	var slot int
	if s.window {
		slot = int(c.Index)
		if slot >= len(s.slots) {
			st.dq.push(c, fmt.Errorf("rdma: chunk %d: %w: the receiver's window has %d slots", c.Index, chunk.ErrRejected, len(s.slots)))
			return nil
		}
		if st.flights[slot].used {
			st.dq.push(c, fmt.Errorf("rdma: chunk %d: %w: already in flight", c.Index, chunk.ErrRejected))
			return nil
		}
	} else {
		slot = st.freeSlots[len(st.freeSlots)-1]
	}
	rb := s.slots[slot]
	if c.Length > rb.Len {
		st.dq.push(c, fmt.Errorf("rdma: chunk %d: length %d exceeds the receiver's slot (%d bytes)", c.Index, c.Length, rb.Len))
		return nil
	}
	buf := st.freeBufs[len(st.freeBufs)-1]
	sge, err := st.src.sge(buf, c)
	if err != nil {
		st.dq.push(c, fmt.Errorf("rdma: chunk %d: reading the source: %w", c.Index, err))
		return nil
	}
	msg := chunkMsg{Slot: uint32(slot), Chunk: c}
	if knobs.corrupt != nil && knobs.corrupt(c) {
		msg.Chunk.CRC ^= 1
	}
	wrs := make([]verbs.SendWR, 0, 2)
	if c.Length > 0 {
		wrs = append(wrs, verbs.SendWR{WRID: wrWrite | uint64(slot), Opcode: verbs.OpWrite, Local: sge,
			RemoteAddr: rb.Addr, RKey: rb.RKey})
	}
	// The message buffer is the staging buffer's: both are free again
	// once the SEND completed.
	wrs = append(wrs, s.ep.sendMsg(buf, wrSend|uint64(slot), func(b []byte) { putChunkMsg(b, msg) }))
	if !s.window {
		st.freeSlots = st.freeSlots[:len(st.freeSlots)-1]
	}
	st.freeBufs = st.freeBufs[:len(st.freeBufs)-1]
	st.flights[slot] = flight{c: c, buf: buf, used: true}
	st.inflight++
	st.posts.in <- postReq{c.Index, wrs}
	return nil
}

// posters post work requests for Send from their own goroutines. With rxe
// the protocol work of a user QP runs inside ibv_post_send, in the caller's
// thread, until the send queue is empty: posting from the Send loop would
// stall it for a whole chunk's processing and leave the queue empty between
// chunks while the loop reads the next one. With two posters, one does the
// processing while the other queues the next chunk and returns at once
// (the kernel sees the queue's task busy and lets its runner continue), and
// the Send loop stays free to read ahead and handle completions. On real
// hardware a post is a doorbell write and the posters cost nothing.
type posters struct {
	in   chan postReq
	errs chan error // the first posting error
	wg   sync.WaitGroup
}

type postReq struct {
	chunk uint32
	wrs   []verbs.SendWR
}

const numPosters = 2

func startPosters(qp *verbs.QueuePair) *posters {
	p := &posters{in: make(chan postReq, MaxDepth), errs: make(chan error, 1)}
	for range numPosters {
		p.wg.Go(func() {
			for r := range p.in {
				if err := qp.PostSend(r.wrs...); err != nil {
					select {
					case p.errs <- fmt.Errorf("%w: posting chunk %d: %w", ErrBroken, r.chunk, err):
					default:
					}
				}
			}
		})
	}
	return p
}

// stop waits until every queued request was posted (or failed to be).
func (p *posters) stop() {
	close(p.in)
	p.wg.Wait()
}

// complete handles one work completion.
func (st *sendState) complete(wc verbs.WorkCompletion) error {
	id := int(wc.WRID &^ wrKind)
	if err := wc.Err(); err != nil {
		return fmt.Errorf("%s: %w", st.describe(wc.WRID), err)
	}
	switch wc.WRID & wrKind {
	case wrSend:
		if id >= len(st.flights) || !st.flights[id].used {
			return fmt.Errorf("%w: completion for idle slot %d", errBadMessage, id)
		}
		st.flights[id].sent = true
		st.finish(id)
	case wrRecv:
		m, err := parseAckMsg(st.s.ep.recvBuf(id)[:min(int(wc.ByteLen), msgLen)])
		if err == nil && int(wc.ByteLen) != msgLen {
			err = fmt.Errorf("%w: %d-byte message", errBadMessage, wc.ByteLen)
		}
		if err != nil {
			return err
		}
		if err := st.s.ep.postRecv(id); err != nil {
			return fmt.Errorf("%w: reposting a receive: %w", ErrBroken, err)
		}
		slot := int(m.Slot)
		if slot >= len(st.flights) || !st.flights[slot].used || st.flights[slot].acked || st.flights[slot].c.Index != m.Index {
			return fmt.Errorf("%w: unexpected ack for chunk %d in slot %d", errBadMessage, m.Index, m.Slot)
		}
		f := &st.flights[slot]
		f.acked, f.verdict = true, ackError(f.c, m.Status)
		st.finish(slot)
	default:
		return fmt.Errorf("%w: unexpected completion %#x", errBadMessage, wc.WRID)
	}
	return nil
}

// describe names the work request wrid for an error message.
func (st *sendState) describe(wrid uint64) string {
	id := int(wrid &^ wrKind)
	what := map[uint64]string{wrWrite: "WRITE", wrSend: "SEND", wrRecv: "receive", wrProbe: "liveness probe (zero-length WRITE)"}[wrid&wrKind]
	if wrid&wrKind == wrRecv || wrid&wrKind == wrProbe || id >= len(st.flights) || !st.flights[id].used {
		return what
	}
	return fmt.Sprintf("%s of chunk %d (slot %d)", what, st.flights[id].c.Index, id)
}

// finish frees a slot once both its SEND completed and its ack arrived.
func (st *sendState) finish(slot int) {
	f := &st.flights[slot]
	if !f.sent || !f.acked {
		return
	}
	f.used = false
	if !st.s.window {
		st.freeSlots = append(st.freeSlots, slot)
	}
	st.freeBufs = append(st.freeBufs, f.buf)
	st.inflight--
	st.dq.push(f.c, f.verdict)
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

// source provides the local SGE of a chunk's bytes.
type source struct {
	s    *Sender
	file *os.File
	// mem, when set, holds the source from offset base on: registered (mr)
	// and written from, or copied into the staging buffers.
	mem    []byte
	base   int64
	mr     *verbs.MemoryRegion
	mapped bool // mem is our own mapping (sourceMmap), unmapped by close
}

func (s *Sender) prepareSource(from Source, depth int) (*source, error) {
	src := &source{s: s, file: from.File, mem: from.Bytes, base: from.Base}
	if from.Bytes == nil && s.sourceMode == sourceMmap {
		fi, err := from.File.Stat()
		if err != nil {
			return nil, err
		}
		if fi.Size() == 0 {
			src.mem = []byte{}
			return src, nil
		}
		// MAP_PRIVATE: on 6.1 a read-only MAP_SHARED file mapping fails to
		// register (EFAULT); nothing ever writes the private one, so it shows
		// the page cache.
		src.mem, err = syscall.Mmap(int(from.File.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_PRIVATE)
		if err != nil {
			return nil, fmt.Errorf("rdma: mapping the source: %w", err)
		}
		src.mapped, src.base, from.Register = true, 0, true
	}
	if from.Register || src.mapped {
		if len(src.mem) == 0 {
			return src, nil
		}
		if pre := s.pre; pre != nil && sameMemory(pre.Bytes(), src.mem) {
			src.mr, s.pre = pre, nil // registered ahead (RegisterSource)
			return src, nil
		}
		s.DropSource()
		var err error
		if src.mr, err = s.registerSource(src.mem); err != nil {
			src.close()
			return nil, err
		}
		return src, nil
	}
	s.DropSource() // registered ahead for a Source that is not this one
	var size int
	for _, b := range s.slots {
		size = max(size, int(b.Len))
	}
	size = (size + 4095) &^ 4095
	// Buffers at least as large as before are kept: a parked sender does
	// not re-register them for a smaller transfer.
	if s.staging == nil || s.bufSize < size || s.staging.Len() < depth*s.bufSize {
		if s.staging != nil {
			s.staging.Close()
			s.staging = nil
		}
		mr, err := s.ep.pd.AllocMemoryRegion(depth*size, 0) // source of WRITEs: local read only
		if err != nil {
			return nil, err
		}
		s.staging, s.bufSize = mr, size
	}
	return src, nil
}

// sameMemory reports whether a and b are the same bytes (not equal ones).
func sameMemory(a, b []byte) bool {
	return len(a) == len(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
}

// sge returns where chunk c's bytes are, putting them into staging buffer
// buf if need be.
func (src *source) sge(buf int, c chunk.Chunk) (verbs.SGE, error) {
	if c.Length == 0 {
		return verbs.SGE{}, nil // nothing to WRITE
	}
	var from []byte
	if src.mem != nil {
		off := c.Offset - src.base
		if off < 0 || off+int64(c.Length) > int64(len(src.mem)) {
			return verbs.SGE{}, fmt.Errorf("range [%d, %d) outside the source's [%d, %d): %w", c.Offset, c.Offset+int64(c.Length),
				src.base, src.base+int64(len(src.mem)), io.ErrUnexpectedEOF)
		}
		if src.mr != nil {
			return src.mr.SGE(int(off), int(c.Length)), nil
		}
		from = src.mem[off : off+int64(c.Length)]
	}
	st := src.s.staging
	off := buf * src.s.bufSize
	b := st.Bytes()[off : off+int(c.Length)]
	if from != nil {
		if err := copyMapped(b, from); err != nil {
			return verbs.SGE{}, err
		}
		return st.SGE(off, int(c.Length)), nil
	}
	n, err := src.file.ReadAt(b, c.Offset)
	if n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return verbs.SGE{}, err
	}
	return st.SGE(off, int(c.Length)), nil
}

// copyMapped copies from or into a file mapping, turning the fault of a page
// beyond a file that shrank meanwhile (or that the file system could not
// provide: no space) into an error wrapping io.ErrUnexpectedEOF instead of a
// crash.
func copyMapped(dst, src []byte) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = fmt.Errorf("a file mapping faulted (%v): %w", r, io.ErrUnexpectedEOF)
		}
	}()
	copy(dst, src)
	return nil
}

func (src *source) close() {
	if src.mr != nil {
		src.mr.Close()
	}
	if src.mapped {
		syscall.Munmap(src.mem)
	}
}

// wcBatch is what pollCQ hands the Send loop.
type wcBatch struct {
	wcs []verbs.WorkCompletion
	err error
}

// pollCQ waits for completions (sleeping on the completion channel) and
// passes them on until ctx ends or the CQ fails.
func pollCQ(ctx context.Context, cq *verbs.CompletionQueue, out chan<- wcBatch) {
	wcs := make([]verbs.WorkCompletion, 64)
	for {
		n, err := cq.Wait(ctx, wcs)
		if ctx.Err() != nil {
			return
		}
		b := wcBatch{wcs: append([]verbs.WorkCompletion(nil), wcs[:n]...), err: err}
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// doneQueue calls done in order from one goroutine, so that the Send loop
// never blocks on a callback (which may put a chunk back on the channel Send
// reads).
type doneQueue struct {
	done func(chunk.Chunk, error)
	mu   sync.Mutex
	q    []doneItem
	wake chan struct{}
	end  bool
	wg   sync.WaitGroup
}

type doneItem struct {
	c   chunk.Chunk
	err error
}

func newDoneQueue(done func(chunk.Chunk, error)) *doneQueue {
	d := &doneQueue{done: done, wake: make(chan struct{}, 1)}
	d.wg.Go(d.run)
	return d
}

func (d *doneQueue) push(c chunk.Chunk, err error) {
	d.mu.Lock()
	d.q = append(d.q, doneItem{c, err})
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *doneQueue) run() {
	for {
		d.mu.Lock()
		q, end := d.q, d.end
		d.q = nil
		d.mu.Unlock()
		for _, it := range q {
			d.done(it.c, it.err)
		}
		if len(q) == 0 {
			if end {
				return
			}
			<-d.wake
		}
	}
}

// close waits until every pushed chunk was answered.
func (d *doneQueue) close() {
	d.mu.Lock()
	d.end = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	d.wg.Wait()
}
