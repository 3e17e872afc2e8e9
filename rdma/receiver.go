package rdma

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/verbs"
)

// MaxSlots bounds NewReceiver's slots (a receive and two send work requests
// each).
const MaxSlots = 1024

// Receiver is the receiving side of one RDMA connection: registered staging
// slots the sender WRITEs into, and a goroutine that verifies each landed
// chunk, writes it to the sink's file and returns the slot.
type Receiver struct {
	ep    *endpoint
	slots []*verbs.MemoryRegion
	sink  fallback.Sink

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
	ep, err := openEndpoint(opt, remote.Addr(), 2*slots+8, slots+8, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
	if err != nil {
		return nil, EndpointInfo{}, nil, err
	}
	r := &Receiver{ep: ep, sink: sink, drained: make(chan struct{})}
	defer func() {
		if err != nil {
			r.ep.close(r.slots...)
		}
	}()
	bufs := make([]RemoteBuffer, slots)
	for i := range slots {
		mr, err := ep.pd.AllocMemoryRegion(slotSize, verbs.AccessLocalWrite|verbs.AccessRemoteWrite)
		if err != nil {
			return nil, EndpointInfo{}, nil, err
		}
		r.slots = append(r.slots, mr)
		bufs[i] = RemoteBuffer{Addr: mr.Addr(), RKey: mr.RKey(), Len: uint32(slotSize)}
	}
	if err := ep.connect(remote); err != nil {
		return nil, EndpointInfo{}, nil, fmt.Errorf("rdma: connecting to %s QP %#x: %w", remote.Addr(), remote.QPN, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Go(func() { r.err = r.drain(ctx); close(r.drained) })
	return r, ep.info, bufs, nil
}

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
	jobs := make(chan landing, len(r.slots))
	var workers sync.WaitGroup
	// Half the CPUs: the rest is left to the device (rxe copies in the
	// kernel) and the sender's side; in the 2-vCPU testbed one worker beat two.
	nw := min(len(r.slots), max(1, runtime.GOMAXPROCS(0)/2), maxWorkers)
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
		errs = append(errs, r.ep.close())
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}
