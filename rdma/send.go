package rdma

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/verbs"
)

// probeAfter is how long Send waits without a completion, with chunks in
// flight, before it probes the receiver with a zero-length WRITE.
var probeAfter = 2 * time.Second

// Send has the contract of the TCP transport's Send: it WRITEs the chunks taken from
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
	open := true
	for open || st.inflight > 0 {
		var in <-chan chunk.Chunk
		if open && len(st.freeBufs) > 0 && (s.window || len(st.freeSlots) > 0) {
			in = chunks
		}
		var err error
		select {
		case <-probe.C:
			// No silence verdict of our own: a 4 MiB WRITE on a slow link can
			// take longer than any fixed bound, and both retry counts are
			// finite, so a stalled send queue (probe included) ends in a
			// completion error from the device.
			if st.inflight > 0 && !probing {
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
		if m.RKey != 0 {
			if !st.s.window {
				return fmt.Errorf("%w: a new rkey for staging slot %d", errBadMessage, slot)
			}
			st.s.slots[slot].RKey = m.RKey // the window slot, registered again for the resend
		}
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
