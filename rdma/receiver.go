package rdma

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rxfer/rxfer/internal/crc32c"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/verbs"
)

// MaxSlots bounds a staging receiver's slots (a receive and two send work
// requests each).
const MaxSlots = 1024

// MaxWindowSlots bounds the slots of a window receiver (one RemoteBuffer each
// goes over the control plane; work requests are bounded by MaxDepth instead).
const MaxWindowSlots = 1 << 16

// Receiver is the receiving side of one RDMA connection: registered staging
// slots the sender WRITEs into, and a goroutine that verifies each landed
// chunk, writes it to the sink's file and returns the slot. A window
// receiver (ReceiverConfig.Window) instead has the sender WRITE each chunk
// straight into its place in caller-owned memory.
type Receiver struct {
	ep     *endpoint
	slots  []*verbs.MemoryRegion // staging mode, registered over mem
	mem    []*verbs.Buffer       // staging memory, kept when parked (Park)
	nslots int
	sink   chunk.Sink
	// extents is sink as a chunk.ExtentSink, if it is one (staging mode
	// only): chunks are admitted with AdmitExtents and land extent by extent.
	extents chunk.ExtentSink

	// Window mode: window is the caller's memory; slot i is
	// window[i*slotSize:] (the last one shorter), registered as windowMRs[i]
	// until its chunk is verified (nil after: its rkey is dead).
	window    []byte
	windowMRs []*verbs.MemoryRegion
	slotSize  int
	inPlace   atomic.Int64 // chunks verified in place in the window

	// Staging mode with a MappedSink: its mapping, and the file offset of
	// mapped[0]; verified chunks are copied there instead of pwritten.
	mapped     []byte
	mappedBase int64

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	err     error         // why draining stopped, if not Close; read after drained
	drained chan struct{} // closed when drain returned

	closeOnce sync.Once
	closeErr  error

	// For Park: the endpoint we are connected to, acknowledgements posted
	// and completed, completions drain took but did not handle (when
	// stopped), and whether a chunk message was left unhandled.
	peer      EndpointInfo
	acksSent  atomic.Int64
	acksDone  int64 // drain's goroutine only, then Park
	leftover  []verbs.WorkCompletion
	unhandled bool
}

// ReceiverConfig says how a [Receiver] takes chunks: in staging slots (the
// default) or, with Window set, in place in caller-owned memory.
type ReceiverConfig struct {
	// Sink admits each landed chunk, receives its bytes (staging mode) and
	// hears its verdict. A chunk.ExtentSink (chunks that span several
	// files) gets AdmitExtents instead of Admit and never File; it takes
	// staging mode only (a window lands chunks in one memory) and is never
	// used as a MappedSink.
	Sink chunk.Sink
	// SlotSize is the size of a slot in bytes: 1 B to 2 GiB. In window mode
	// it is the chunk size: slot i holds chunk i.
	SlotSize int
	// Slots is the number of staging slots (1 to MaxSlots): anonymous
	// memory, access LOCAL_WRITE|REMOTE_WRITE only, one region and rkey per
	// slot. Verified chunks are copied to the sink's file (or its mapping,
	// MappedSink) and the slot is returned to the sender.
	Slots int
	// Window, when set, selects window mode: the memory (mmap'd, never Go
	// heap memory; it must stay mapped until Close returned) is offered as
	// ceil(len(Window)/SlotSize) slots (at most MaxWindowSlots), slot i
	// being Window[i*SlotSize:], the last one shorter, each registered as a
	// memory region of its own with LOCAL_WRITE|REMOTE_WRITE until its chunk
	// is verified: a WRITE of the (authenticated) sender is bounded by its
	// slot, and a verified chunk cannot be written again. The sender must
	// use [Sender.ConnectWindow]; nothing is copied after a chunk landed, the
	// sink's file is never written and Admit's offset is not used.
	Window []byte
	// Resume, when set, is a parked endpoint ([Receiver.Park]) to take
	// instead of a new queue pair: it is still connected to the sender that
	// offers it (EndpointInfo.ConnectedQPN), so nothing is connected and
	// fresh slots are registered for this transfer (over the staging memory
	// it kept, where large enough). The endpoint is the Receiver's now; on
	// error it is closed.
	Resume *ParkedEndpoint
}

// slots validates the configuration once, for both modes, and returns the
// number of slots to offer.
func (c ReceiverConfig) slots() (int, error) {
	if _, ok := c.Sink.(chunk.ExtentSink); ok && c.Window != nil {
		return 0, errors.New("rdma: a window receiver lands chunks in place in one memory window and cannot take a chunk.ExtentSink (chunks that span several files): use staging slots")
	}
	if c.Window != nil {
		if len(c.Window) == 0 || c.SlotSize <= 0 || int64(c.SlotSize) > 1<<31 {
			return 0, fmt.Errorf("rdma: invalid receive window: %d bytes in slots of %d bytes", len(c.Window), c.SlotSize)
		}
		n := (len(c.Window) + c.SlotSize - 1) / c.SlotSize
		if n > MaxWindowSlots {
			return 0, fmt.Errorf("rdma: receive window of %d bytes is %d slots of %d bytes (at most %d)", len(c.Window), n, c.SlotSize, MaxWindowSlots)
		}
		return n, nil
	}
	if c.Slots <= 0 || c.Slots > MaxSlots || c.SlotSize <= 0 || int64(c.SlotSize) > 1<<31 {
		return 0, fmt.Errorf("rdma: invalid receive window: %d slots of %d bytes (want 1..%d slots of 1 B..2 GiB)", c.Slots, c.SlotSize, MaxSlots)
	}
	return c.Slots, nil
}

// NewReceiver sets up the receiving side of a connection as cfg says: it
// creates a QP connected to remote (RTR, RTS), or takes cfg.Resume (remote
// and opt are then unused: the parked endpoint's peer is the sender),
// registers the slots or the window, posts the receives, and starts
// draining: each landed chunk is admitted (Sink.Admit, or AdmitExtents for
// a chunk.ExtentSink), CRC32C-verified in its slot (window mode) or written
// to the sink's file at its offset, or into its extents, and verified as it
// landed there (staging mode), reported (Sink.Landed) and acknowledged, which
// returns a staging slot to the sender.
//
// It returns our endpoint and the slots for the sender's [Sender.Connect]
// (staging), [Sender.ConnectWindow] (window) or [Sender.Resume].
func NewReceiver(opt Options, remote EndpointInfo, cfg ReceiverConfig) (*Receiver, EndpointInfo, []RemoteBuffer, error) {
	n, err := cfg.slots()
	if err != nil {
		if cfg.Resume != nil {
			cfg.Resume.Close()
		}
		return nil, EndpointInfo{}, nil, err
	}
	register := stagingSlots(n, cfg.SlotSize)
	if cfg.Window != nil {
		register = windowSlots(cfg.Window, cfg.SlotSize, n)
	}
	if cfg.Resume != nil {
		opt, remote = Options{}, cfg.Resume.peer
	}
	return newReceiver(opt, remote, cfg.Resume, n, cfg.Sink, register)
}

// stagingSlots registers slots over the staging memory a parked endpoint
// kept (big enough buffers are reused: their pages are already there, so
// registering them pins without faulting and zeroing fresh memory) and new
// buffers for the rest. The memory held bytes of this same peer's previous
// transfer, and a slot is only read after the peer said a chunk landed in it.
func stagingSlots(slots, slotSize int) func(r *Receiver) ([]RemoteBuffer, error) {
	return func(r *Receiver) ([]RemoteBuffer, error) {
		bufs := make([]RemoteBuffer, slots)
		for i := range slots {
			if i == len(r.mem) {
				r.mem = append(r.mem, nil)
			}
			if b := r.mem[i]; b == nil || len(b.Bytes()) < slotSize {
				if b != nil {
					b.Close()
				}
				var err error
				if r.mem[i], err = verbs.NewBuffer(slotSize); err != nil {
					return nil, err
				}
			}
			mr, err := r.ep.pd.RegisterMemory(r.mem[i].Bytes()[:slotSize], verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
			if err != nil {
				return nil, err
			}
			r.slots = append(r.slots, mr)
			bufs[i] = RemoteBuffer{Addr: mr.Addr(), RKey: mr.RKey(), Len: uint32(slotSize)}
		}
		return bufs, nil
	}
}

// windowSlots offers the caller's memory as n slots of slotSize bytes, each
// registered as a memory region of its own so that it can be deregistered
// the moment its chunk is verified.
func windowSlots(mem []byte, slotSize, n int) func(r *Receiver) ([]RemoteBuffer, error) {
	return func(r *Receiver) ([]RemoteBuffer, error) {
		r.window, r.slotSize = mem, slotSize
		r.windowMRs = make([]*verbs.MemoryRegion, n)
		bufs := make([]RemoteBuffer, n)
		for i := range n {
			mr, err := r.registerWindowSlot(i)
			if err != nil {
				return nil, fmt.Errorf("registering window slot %d of %d: %w", i, n, err)
			}
			bufs[i] = RemoteBuffer{Addr: mr.Addr(), RKey: mr.RKey(), Len: uint32(mr.Len())}
		}
		return bufs, nil
	}
}

// registerWindowSlot registers window slot i, remote-writable, as
// r.windowMRs[i].
func (r *Receiver) registerWindowSlot(i int) (*verbs.MemoryRegion, error) {
	off := i * r.slotSize
	mr, err := r.ep.pd.RegisterMemory(r.window[off:off+min(r.slotSize, len(r.window)-off)], verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
	if err != nil {
		return nil, err
	}
	r.windowMRs[i] = mr
	return mr, nil
}

// newReceiver opens the endpoint (or takes the parked one), registers
// the slots with register, connects (a new endpoint) and starts draining.
// Chunks in flight are bounded by the sender's depth (at most MaxDepth), not
// by the slots: every endpoint has work requests for MaxDepth, so a parked
// one can serve either mode.
func newReceiver(opt Options, remote EndpointInfo, parked *ParkedEndpoint, nslots int, sink chunk.Sink, register func(*Receiver) ([]RemoteBuffer, error)) (_ *Receiver, _ EndpointInfo, _ []RemoteBuffer, err error) {
	var ep *endpoint
	var mem []*verbs.Buffer
	if parked != nil {
		ep, parked.ep = parked.ep, nil
		mem, parked.mem = parked.mem, nil
		if ep == nil {
			return nil, EndpointInfo{}, nil, errors.New("rdma: parked endpoint already used or closed")
		}
	} else if ep, err = openEndpoint(opt, remote.Addr(), 2*MaxDepth+8, MaxDepth+8, verbs.AccessLocalWrite|verbs.AccessRemoteWrite); err != nil {
		return nil, EndpointInfo{}, nil, err
	}
	r := &Receiver{ep: ep, mem: mem, sink: sink, nslots: nslots, drained: make(chan struct{}), peer: remote}
	if es, ok := sink.(chunk.ExtentSink); ok {
		r.extents = es
	} else if ms, ok := sink.(MappedSink); ok {
		r.mapped, r.mappedBase = ms.Mapping()
	}
	defer func() {
		if err != nil {
			r.release(append(r.slots, r.windowMRs...)...)
		}
	}()
	bufs, err := register(r)
	if err != nil {
		return nil, EndpointInfo{}, nil, err
	}
	if parked == nil {
		if err := ep.connect(remote); err != nil {
			return nil, EndpointInfo{}, nil, fmt.Errorf("rdma: connecting to %s QP %#x: %w", remote.Addr(), remote.QPN, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Go(func() { r.err = r.drain(ctx); close(r.drained) })
	return r, ep.info, bufs, nil
}

// Window reports whether the receiver lands chunks in place in caller-owned
// memory (ReceiverConfig.Window).
func (r *Receiver) Window() bool { return r.window != nil }

// InPlace returns how many chunks were verified in place in the window (0 for
// a staging receiver).
func (r *Receiver) InPlace() int64 { return r.inPlace.Load() }

// landing is a chunk message taken off the receive queue.
type landing struct {
	m   chunkMsg
	err error // the message was malformed
}

// drain handles completions until ctx ends or the QP fails: it takes each
// chunk message off the receive queue, reposts the receive, and hands the
// chunk to a verification worker; SEND completions free ack buffers.
func (r *Receiver) drain(closing context.Context) (err error) {
	ctx, cancel := context.WithCancelCause(closing)
	acks := newAckBuffers(r.ep.nSend)
	jobs := make(chan landing, r.ep.nRecv)
	var workers sync.WaitGroup
	// Half the CPUs: the rest is left to the device (rxe copies in the
	// kernel) and the sender's side (README.md: one worker beat two).
	nw := min(r.nslots, max(1, runtime.GOMAXPROCS(0)/2), maxWorkers)
	if knobs.verifyWorkers > 0 {
		nw = knobs.verifyWorkers
	}
	for range nw {
		workers.Go(func() {
			for l := range jobs {
				if ctx.Err() != nil {
					continue // closing: not admitted, so no Landed owed
				}
				if err := r.answer(ctx, acks, l); err != nil {
					cancel(err)
				}
			}
		})
	}
	defer func() {
		// Workers drop the chunks they have not admitted yet, finish the one
		// they are on, and are gone before Close deregisters the slots.
		cancel(nil)
		close(jobs)
		workers.Wait()
		if closing.Err() != nil {
			err = nil
		}
	}()

	wcs := make([]verbs.WorkCompletion, 64)
	for {
		n, err := r.ep.cq.Wait(ctx, wcs)
		if ctx.Err() != nil {
			r.leftover = append(r.leftover, wcs[:n]...) // for Park
			return context.Cause(ctx)
		}
		if err != nil {
			return err
		}
		for k, wc := range wcs[:n] {
			if err := wc.Err(); err != nil {
				return err // the QP is in the error state: nothing more will land
			}
			i := int(wc.WRID &^ wrKind)
			if wc.WRID&wrKind == wrSend {
				r.acksDone++
				acks.free(i)
				continue
			}
			m, err := parseChunkMsg(r.ep.recvBuf(i)[:min(int(wc.ByteLen), msgLen)])
			if err == nil && int(wc.ByteLen) != msgLen {
				err = fmt.Errorf("%w: %d-byte message", errBadMessage, wc.ByteLen)
			}
			// The message is copied out: repost before the ack lets the
			// sender send again.
			if err := r.ep.postRecv(i); err != nil {
				return err
			}
			select {
			case jobs <- landing{m, err}:
			case <-ctx.Done():
				r.unhandled = true
				r.leftover = append(r.leftover, wcs[k+1:n]...)
				return context.Cause(ctx)
			}
		}
	}
}

// maxWorkers bounds the goroutines that verify and write chunks.
const maxWorkers = 8

// answer verifies and writes one chunk and acknowledges it.
func (r *Receiver) answer(ctx context.Context, acks ackBuffers, l landing) error {
	status, rkey := r.verdict(l.m, l.err)
	i, ok := acks.get(ctx)
	if !ok {
		return context.Cause(ctx)
	}
	m := l.m
	ack := r.ep.sendMsg(i, wrSend|uint64(i), func(b []byte) {
		putAckMsg(b, ackMsg{Slot: m.Slot, Index: m.Chunk.Index, Status: status, RKey: rkey})
	})
	if err := r.ep.qp.PostSend(ack); err != nil {
		return err
	}
	r.acksSent.Add(1)
	return nil
}

// ackBuffers hands out control send buffers; each is free again once its
// SEND completed.
type ackBuffers chan int

func newAckBuffers(n int) ackBuffers {
	a := make(ackBuffers, n)
	for i := range n {
		a <- i
	}
	return a
}

// get returns a free buffer, waiting while every buffer's SEND is
// outstanding.
func (a ackBuffers) get(ctx context.Context) (int, bool) {
	select {
	case i := <-a:
		return i, true
	case <-ctx.Done():
		return 0, false
	}
}

// free returns a buffer; it never blocks, as there are only cap(a) buffers.
func (a ackBuffers) free(i int) { a <- i }

// verdict admits, verifies and writes one chunk; Landed is called for every
// admitted chunk. A window slot re-registered after a checksum failure comes
// with its new rkey (else 0).
func (r *Receiver) verdict(m chunkMsg, err error) (chunk.Status, uint32) {
	if r.window != nil {
		return r.verdictInPlace(m, err)
	}
	c := m.Chunk
	if err != nil || int(m.Slot) >= len(r.slots) || int(c.Length) > r.slots[m.Slot].Len() {
		return chunk.StatusRejected, 0
	}
	var off int64
	var exts []chunk.Extent
	if r.extents != nil {
		exts, err = r.extents.AdmitExtents(c)
	} else {
		off, err = r.sink.Admit(c)
	}
	if err != nil {
		return chunk.RefusalStatus(err), 0
	}
	// The slot stays writable by the sender: verify the bytes that landed
	// in the file (as the TCP receiver reads back), whatever the slot
	// holds by then.
	var sum uint32
	if r.extents != nil {
		sum, err = landExtents(r.slots[m.Slot].Bytes()[:c.Length], c, exts)
	} else {
		sum, err = r.land(r.slots[m.Slot].Bytes()[:c.Length], off)
	}
	if err != nil {
		r.sink.Landed(c, fmt.Errorf("rdma: chunk %d: %w: %w", c.Index, chunk.ErrReceiverIO, err))
		return chunk.StatusIO, 0
	}
	if sum != c.CRC {
		r.sink.Landed(c, fmt.Errorf("rdma: chunk %d: %w (landed bytes have %08x, sender sent %08x)", c.Index, chunk.ErrChecksum, sum, c.CRC))
		return chunk.StatusChecksum, 0
	}
	r.sink.Landed(c, nil)
	return chunk.StatusOK, 0
}

// MappedSink is a Sink whose destination is also mapped (MAP_SHARED,
// read-write, for the receiver's lifetime): a staging receiver copies
// verified chunks into the mapping instead of pwriting them. Writers of one file through pwrite take turns on
// its inode lock, page allocation included; page faults on a mapping do not,
// so the lanes of a transfer fill the destination side by side.
type MappedSink interface {
	chunk.Sink
	// Mapping returns the mapping and the file offset of its first byte, or
	// nil to use File. The receiver asks once, when it is created.
	Mapping() (mem []byte, base int64)
}

// landBlock is how much of a chunk land copies before it checksums the copy:
// small enough that the CRC reads the destination from cache, not memory.
const landBlock = 128 << 10

// land puts a chunk's bytes b at file offset off and returns the CRC32C of
// the bytes as they landed there. Through the sink's mapping (when it covers
// them) it copies and checksums block by block, one pass over memory; else
// it pwrites and reads the bytes back.
func (r *Receiver) land(b []byte, off int64) (sum uint32, err error) {
	if at := off - r.mappedBase; r.mapped != nil && at >= 0 && at+int64(len(b)) <= int64(len(r.mapped)) {
		dst := r.mapped[at : at+int64(len(b))]
		err = onMapping(func() {
			for i := 0; i < len(b); i += landBlock {
				j := min(i+landBlock, len(b))
				copy(dst[i:j], b[i:j])
				sum = crc32c.Update(sum, dst[i:j])
			}
		})
		return sum, err
	}
	f := r.sink.File()
	if _, err := f.WriteAt(b, off); err != nil {
		return 0, err
	}
	if sum, err = readBackCRC(0, f, off, int64(len(b)), make([]byte, min(len(b), 1<<20))); err != nil {
		return 0, fmt.Errorf("reading back: %w", err)
	}
	return sum, nil
}

// landExtents is land for a chunk.ExtentSink: it pwrites the chunk's bytes b
// into the extents the sink admitted the chunk to, in order, and returns the
// CRC32C of what landed, read back from them: one CRC across the extents.
// Extents that do not fit the chunk (a Sink bug) fail it before a byte is
// written.
func landExtents(b []byte, c chunk.Chunk, exts []chunk.Extent) (sum uint32, err error) {
	if err := chunk.CheckExtents(c, exts); err != nil {
		return 0, fmt.Errorf("the sink's extents: %w", err)
	}
	rest := b
	for _, e := range exts {
		if e.Length == 0 {
			continue
		}
		if _, err := e.File.WriteAt(rest[:e.Length], e.Offset); err != nil {
			return 0, err
		}
		rest = rest[e.Length:]
	}
	buf := make([]byte, min(len(b), 1<<20))
	for _, e := range exts {
		if sum, err = readBackCRC(sum, e.File, e.Offset, e.Length, buf); err != nil {
			return 0, fmt.Errorf("reading back: %w", err)
		}
	}
	return sum, nil
}

// readBackCRC updates sum, a CRC32C, with the n bytes at offset off of f,
// read back from the file through buf.
func readBackCRC(sum uint32, f *os.File, off, n int64, buf []byte) (uint32, error) {
	for n > 0 {
		k, err := f.ReadAt(buf[:min(n, int64(len(buf)))], off)
		sum = crc32c.Update(sum, buf[:k])
		off, n = off+int64(k), n-int64(k)
		if err != nil && n > 0 {
			return 0, err
		}
	}
	return sum, nil
}

// verdictInPlace admits and verifies a chunk in its window slot, which must
// be the one its index names. The slot is deregistered before its bytes are
// checksummed: from then on no remote write lands in it, so the bytes
// verified are final and commit needs no second pass. A slot that fails
// verification is registered again, with a new rkey for the resend.
func (r *Receiver) verdictInPlace(m chunkMsg, err error) (chunk.Status, uint32) {
	c := m.Chunk
	if err != nil || m.Slot != c.Index || int(m.Slot) >= r.nslots {
		return chunk.StatusRejected, 0
	}
	off := int(m.Slot) * r.slotSize
	if int(c.Length) > min(r.slotSize, len(r.window)-off) {
		return chunk.StatusRejected, 0
	}
	if _, err := r.sink.Admit(c); err != nil { // validates and claims the chunk; its place is the slot
		return chunk.RefusalStatus(err), 0
	}
	// The claim makes this worker the slot's only user until Landed.
	if mr := r.windowMRs[m.Slot]; mr != nil {
		r.windowMRs[m.Slot] = nil
		if err := mr.Close(); err != nil {
			r.sink.Landed(c, fmt.Errorf("rdma: chunk %d: %w: deregistering its window slot: %w", c.Index, chunk.ErrReceiverIO, err))
			return chunk.StatusIO, 0
		}
	}
	b := r.window[off : off+int(c.Length)]
	if sum := crc32c.Checksum(b); sum != c.CRC {
		mr, err := r.registerWindowSlot(int(m.Slot))
		if err != nil {
			r.sink.Landed(c, fmt.Errorf("rdma: chunk %d: %w: registering its window slot again: %w", c.Index, chunk.ErrReceiverIO, err))
			return chunk.StatusIO, 0
		}
		r.sink.Landed(c, fmt.Errorf("rdma: chunk %d: %w (window has %08x, sender sent %08x)", c.Index, chunk.ErrChecksum, sum, c.CRC))
		return chunk.StatusChecksum, mr.RKey()
	}
	r.inPlace.Add(1)
	r.sink.Landed(c, nil)
	return chunk.StatusOK, 0
}

// Err reports why the receiver stopped draining before Close (a completion
// error naming the ibv_wc_status, say), or nil while it runs.
func (r *Receiver) Err() error {
	select {
	case <-r.drained:
		return r.err
	default:
		return nil
	}
}

// Close stops draining and waits for it (no Sink method is called after Close
// returns), deregisters the slots (their rkeys die: a sender still writing
// gets REM_ACCESS_ERR), then destroys the QP, CQ and PD and closes the
// device. It is idempotent.
func (r *Receiver) Close() error {
	r.closeOnce.Do(func() {
		r.closeErr = errors.Join(r.stop(), r.release())
	})
	return r.closeErr
}

// release closes the endpoint (with the regions mrs, if still registered)
// and unmaps the staging memory.
func (r *Receiver) release(mrs ...*verbs.MemoryRegion) error {
	return errors.Join(r.ep.close(mrs...), freeBuffers(r.mem))
}

// freeBuffers unmaps staging memory no region is registered over any more
// (nil entries: none made).
func freeBuffers(mem []*verbs.Buffer) error {
	var errs []error
	for _, b := range mem {
		if b != nil {
			errs = append(errs, b.Close())
		}
	}
	return errors.Join(errs...)
}

// stop ends draining, waits for it and deregisters the slots or the window
// (their rkeys die; the caller may unmap the window afterwards). Close and
// Park start with it.
func (r *Receiver) stop() error {
	r.cancel()
	r.wg.Wait()
	var errs []error
	for _, mr := range r.slots {
		errs = append(errs, mr.Close())
	}
	for i, mr := range r.windowMRs {
		if mr != nil {
			errs = append(errs, mr.Close())
			r.windowMRs[i] = nil
		}
	}
	return errors.Join(errs...)
}

// ParkedEndpoint is a receiver's queue pair parked between transfers
// ([Receiver.Park]): still connected to its sender's QP, with its CQ, PD,
// control buffers and posted receives, but no slot registered (no rkey of it
// is valid). Resume it with [NewReceiver] (ReceiverConfig.Resume), or Close it.
type ParkedEndpoint struct {
	ep   *endpoint
	mem  []*verbs.Buffer // staging memory for the next transfer's slots (no region over it)
	info EndpointInfo    // ours
	peer EndpointInfo    // the sender's QP ours is connected to
}

// QPN returns the parked queue pair's number.
func (e *ParkedEndpoint) QPN() uint32 { return e.info.QPN }

// Lost is [Sender.Lost] for a parked receiving endpoint.
func (e *ParkedEndpoint) Lost() error {
	if e.ep == nil {
		return nil
	}
	return e.ep.lostErr()
}

// Device returns the parked queue pair's device.
func (e *ParkedEndpoint) Device() string { return e.info.Device }

// Peer returns the sender endpoint the queue pair is connected to.
func (e *ParkedEndpoint) Peer() EndpointInfo { return e.peer }

// Close destroys the parked endpoint (QP, CQ, PD, device). It is idempotent
// and does nothing once the endpoint was resumed.
func (e *ParkedEndpoint) Close() error {
	if e.ep == nil {
		return nil
	}
	ep, mem := e.ep, e.mem
	e.ep, e.mem = nil, nil
	return errors.Join(ep.close(), freeBuffers(mem))
}

// maxParkedStaging bounds the staging memory a parked endpoint keeps: the
// engine's default window (4 slots of 4 MiB, shared by a transfer's lanes)
// fits; a transfer with more slots or larger ones gives the rest back when
// it ends.
const maxParkedStaging = 16 << 20

// keptStaging frees the buffers beyond maxParkedStaging and returns the rest.
func keptStaging(mem []*verbs.Buffer) []*verbs.Buffer {
	total := 0
	for i, b := range mem {
		if total += len(b.Bytes()); total > maxParkedStaging {
			freeBuffers(mem[i:])
			return mem[:i]
		}
	}
	return mem
}

// settleTimeout bounds how long Park waits for the completions of the
// acknowledgements it already sent.
var settleTimeout = 2 * time.Second

// Park ends the receiver's transfer like Close — draining stops, the slots
// (or window) are deregistered, so their rkeys are dead — but keeps the queue
// pair connected, for the same sender's next transfer (ReceiverConfig.Resume). It
// does so only when the connection is clean: draining had not failed, no
// chunk message was left unhandled and every acknowledgement's SEND
// completed (so the next transfer starts with every receive posted and every
// ack buffer free). Otherwise it closes everything and returns an error. The
// Receiver is closed either way.
func (r *Receiver) Park() (*ParkedEndpoint, error) {
	var parked *ParkedEndpoint
	var reason error
	r.closeOnce.Do(func() {
		if reason = r.stop(); reason == nil {
			reason = r.settle()
		}
		if reason == nil {
			parked = &ParkedEndpoint{ep: r.ep, mem: keptStaging(r.mem), info: r.ep.info, peer: r.peer}
			r.closeErr = nil
			return
		}
		r.closeErr = errors.Join(reason, r.release())
	})
	if parked == nil {
		if reason == nil {
			reason = errors.New("rdma: receiver already closed")
		}
		return nil, fmt.Errorf("rdma: receiver not reusable: %w", reason)
	}
	return parked, nil
}

// settle accounts for the completions drain left and waits for the
// outstanding acknowledgements' SEND completions.
func (r *Receiver) settle() error {
	if r.err != nil {
		return r.err
	}
	if r.unhandled {
		return errors.New("a chunk message arrived while closing")
	}
	check := func(wcs []verbs.WorkCompletion) error {
		for _, wc := range wcs {
			if err := wc.Err(); err != nil {
				return err
			}
			if wc.WRID&wrKind != wrSend {
				return fmt.Errorf("unexpected completion %#x while closing", wc.WRID)
			}
			r.acksDone++
		}
		return nil
	}
	if err := check(r.leftover); err != nil {
		return err
	}
	r.leftover = nil
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	wcs := make([]verbs.WorkCompletion, 64)
	for r.acksDone < r.acksSent.Load() {
		n, err := r.ep.cq.Wait(ctx, wcs)
		if err != nil {
			return fmt.Errorf("waiting for %d acknowledgements to complete: %w", r.acksSent.Load()-r.acksDone, err)
		}
		if err := check(wcs[:n]); err != nil {
			return err
		}
	}
	if r.acksDone != r.acksSent.Load() {
		return fmt.Errorf("%d acknowledgements sent, %d completed", r.acksSent.Load(), r.acksDone)
	}
	return nil
}
