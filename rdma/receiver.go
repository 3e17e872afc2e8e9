package rdma

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/verbs"
)

// MaxSlots bounds NewReceiver's slots (a receive and two send work requests
// each).
const MaxSlots = 1024

// MaxWindowSlots bounds the slots of NewWindowReceiver (one RemoteBuffer each
// goes over the control plane; work requests are bounded by MaxDepth instead).
const MaxWindowSlots = 1 << 16

// Receiver is the receiving side of one RDMA connection: registered staging
// slots the sender WRITEs into, and a goroutine that verifies each landed
// chunk, writes it to the sink's file and returns the slot. A window
// receiver (NewWindowReceiver) instead has the sender WRITE each chunk
// straight into its place in caller-owned memory.
type Receiver struct {
	ep     *endpoint
	slots  []*verbs.MemoryRegion // staging mode
	nslots int
	sink   fallback.Sink

	// Window mode: window is the caller's memory, registered as windowMR;
	// slot i is window[i*slotSize:] (the last one shorter).
	window   []byte
	windowMR *verbs.MemoryRegion
	slotSize int
	inPlace  atomic.Int64 // chunks verified in place in the window

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	err     error         // why draining stopped, if not Close; read after drained
	drained chan struct{} // closed when drain returned

	closeOnce sync.Once
	closeErr  error
}

// NewReceiver creates a QP connected to remote (RTR, RTS), registers slots
// staging buffers of slotSize bytes each (anonymous memory, access
// LOCAL_WRITE|REMOTE_WRITE only, one region and rkey per slot), posts a
// receive per slot, and starts draining: each landed chunk is admitted
// (sink.Admit), CRC32C-verified in its slot, written to sink.File() at its
// offset, reported (sink.Landed) and its slot returned to the sender.
//
// It returns our endpoint and the slots for the sender's [Sender.Connect].
func NewReceiver(opt Options, remote EndpointInfo, slots, slotSize int, sink fallback.Sink) (_ *Receiver, _ EndpointInfo, _ []RemoteBuffer, err error) {
	if slots <= 0 || slots > MaxSlots || slotSize <= 0 || int64(slotSize) > 1<<31 {
		return nil, EndpointInfo{}, nil, fmt.Errorf("rdma: invalid receive window: %d slots of %d bytes (want 1..%d slots of 1 B..2 GiB)", slots, slotSize, MaxSlots)
	}
	return newReceiver(opt, remote, slots, slots, sink, func(r *Receiver) ([]RemoteBuffer, error) {
		bufs := make([]RemoteBuffer, slots)
		for i := range slots {
			mr, err := r.ep.pd.AllocMemoryRegion(slotSize, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
			if err != nil {
				return nil, err
			}
			r.slots = append(r.slots, mr)
			bufs[i] = RemoteBuffer{Addr: mr.Addr(), RKey: mr.RKey(), Len: uint32(slotSize)}
		}
		return bufs, nil
	})
}

// NewWindowReceiver is NewReceiver over caller-owned memory: mem (mmap'd,
// never Go heap memory; it must stay mapped until Close returned) is
// registered as one memory region with LOCAL_WRITE|REMOTE_WRITE for this
// receiver's lifetime only, and offered as ceil(len(mem)/slotSize) slots, slot
// i being mem[i*slotSize:] (the last one shorter). The sender must use
// [Sender.ConnectWindow]: the chunk with index i is written into slot i, so
// nothing is copied after it landed. Each chunk is admitted (sink.Admit, whose
// offset is not used: the slot is the chunk's place), CRC32C-verified in
// place, reported (sink.Landed) and acknowledged; sink.File is never written.
//
// One rkey covers the whole window: unlike staging slots, a WRITE of the
// (authenticated) sender is bounded by the window, not by its slot.
func NewWindowReceiver(opt Options, remote EndpointInfo, mem []byte, slotSize int, sink fallback.Sink) (_ *Receiver, _ EndpointInfo, _ []RemoteBuffer, err error) {
	if len(mem) == 0 || slotSize <= 0 || int64(slotSize) > 1<<31 {
		return nil, EndpointInfo{}, nil, fmt.Errorf("rdma: invalid receive window: %d bytes in slots of %d bytes", len(mem), slotSize)
	}
	n := (len(mem) + slotSize - 1) / slotSize
	if n > MaxWindowSlots {
		return nil, EndpointInfo{}, nil, fmt.Errorf("rdma: receive window of %d bytes is %d slots of %d bytes (at most %d)", len(mem), n, slotSize, MaxWindowSlots)
	}
	// Chunks in flight are bounded by the sender's depth, not by the slots.
	wrs := min(n, MaxDepth)
	return newReceiver(opt, remote, n, wrs, sink, func(r *Receiver) ([]RemoteBuffer, error) {
		mr, err := r.ep.pd.RegisterMemory(mem, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
		if err != nil {
			return nil, err
		}
		r.window, r.windowMR, r.slotSize = mem, mr, slotSize
		bufs := make([]RemoteBuffer, n)
		for i := range n {
			off := i * slotSize
			bufs[i] = RemoteBuffer{Addr: mr.Addr() + uint64(off), RKey: mr.RKey(), Len: uint32(min(slotSize, len(mem)-off))}
		}
		return bufs, nil
	})
}

// newReceiver opens the endpoint (work requests for wrs chunks in flight),
// registers the slots with register, connects and starts draining.
func newReceiver(opt Options, remote EndpointInfo, nslots, wrs int, sink fallback.Sink, register func(*Receiver) ([]RemoteBuffer, error)) (_ *Receiver, _ EndpointInfo, _ []RemoteBuffer, err error) {
	ep, err := openEndpoint(opt, remote.Addr(), 2*wrs+8, wrs+8, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
	if err != nil {
		return nil, EndpointInfo{}, nil, err
	}
	r := &Receiver{ep: ep, sink: sink, nslots: nslots, drained: make(chan struct{})}
	defer func() {
		if err != nil {
			r.ep.close(append(r.slots, r.windowMR)...)
		}
	}()
	bufs, err := register(r)
	if err != nil {
		return nil, EndpointInfo{}, nil, err
	}
	if err := ep.connect(remote); err != nil {
		return nil, EndpointInfo{}, nil, fmt.Errorf("rdma: connecting to %s QP %#x: %w", remote.Addr(), remote.QPN, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Go(func() { r.err = r.drain(ctx); close(r.drained) })
	return r, ep.info, bufs, nil
}

// Window reports whether the receiver lands chunks in place in caller-owned
// memory (NewWindowReceiver).
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
	// kernel) and the sender's side; in the 2-vCPU testbed one worker beat two.
	nw := min(r.nslots, max(1, runtime.GOMAXPROCS(0)/2), maxWorkers)
	if verifyWorkers > 0 {
		nw = verifyWorkers
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
			return context.Cause(ctx)
		}
		if err != nil {
			return err
		}
		for _, wc := range wcs[:n] {
			if err := wc.Err(); err != nil {
				return err // the QP is in the error state: nothing more will land
			}
			i := int(wc.WRID &^ wrKind)
			if wc.WRID&wrKind == wrSend {
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
				return context.Cause(ctx)
			}
		}
	}
}

// maxWorkers bounds the goroutines that verify and write chunks.
const maxWorkers = 8

// verifyWorkers, when positive, overrides the number of workers (for
// measurements in tests).
var verifyWorkers = 0

// answer verifies and writes one chunk and acknowledges it.
func (r *Receiver) answer(ctx context.Context, acks ackBuffers, l landing) error {
	status := r.verdict(l.m, l.err)
	i, ok := acks.get(ctx)
	if !ok {
		return context.Cause(ctx)
	}
	m := l.m
	ack := r.ep.sendMsg(i, wrSend|uint64(i), func(b []byte) {
		putAckMsg(b, ackMsg{Slot: m.Slot, Index: m.Chunk.Index, Status: status})
	})
	return r.ep.qp.PostSend(ack)
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
// admitted chunk.
func (r *Receiver) verdict(m chunkMsg, err error) uint8 {
	if r.window != nil {
		return r.verdictInPlace(m, err)
	}
	c := m.Chunk
	if err != nil || int(m.Slot) >= len(r.slots) || int(c.Length) > r.slots[m.Slot].Len() {
		return statusRejected
	}
	off, err := r.sink.Admit(c)
	if err != nil {
		return statusRejected
	}
	b := r.slots[m.Slot].Bytes()[:c.Length]
	if sum := fallback.Checksum(b); sum != c.CRC {
		r.sink.Landed(c, fmt.Errorf("rdma: chunk %d: %w (slot has %08x, sender sent %08x)", c.Index, fallback.ErrChecksum, sum, c.CRC))
		return statusChecksum
	}
	if _, err := r.sink.File().WriteAt(b, off); err != nil {
		r.sink.Landed(c, fmt.Errorf("rdma: chunk %d: %w: %w", c.Index, ErrReceiverIO, err))
		return statusIO
	}
	r.sink.Landed(c, nil)
	return statusOK
}

// verdictInPlace admits and verifies a chunk in its window slot, which must
// be the one its index names.
func (r *Receiver) verdictInPlace(m chunkMsg, err error) uint8 {
	c := m.Chunk
	if err != nil || m.Slot != c.Index || int(m.Slot) >= r.nslots {
		return statusRejected
	}
	off := int(m.Slot) * r.slotSize
	if int(c.Length) > min(r.slotSize, len(r.window)-off) {
		return statusRejected
	}
	if _, err := r.sink.Admit(c); err != nil { // validates the chunk; its place is the slot
		return statusRejected
	}
	b := r.window[off : off+int(c.Length)]
	if sum := fallback.Checksum(b); sum != c.CRC {
		r.sink.Landed(c, fmt.Errorf("rdma: chunk %d: %w (window has %08x, sender sent %08x)", c.Index, fallback.ErrChecksum, sum, c.CRC))
		return statusChecksum
	}
	r.inPlace.Add(1)
	r.sink.Landed(c, nil)
	return statusOK
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
		r.cancel()
		r.wg.Wait()
		var errs []error
		for _, mr := range r.slots {
			errs = append(errs, mr.Close())
		}
		if r.windowMR != nil {
			errs = append(errs, r.windowMR.Close()) // the caller may unmap the window now
		}
		errs = append(errs, r.ep.close())
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}
