package transfer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rxfer/rxfer/internal/crc32c"

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/rdma"
)

// PushRequest asks a node to send one of its files to a peer.
type PushRequest struct {
	SourcePath string // beneath this node's root
	DestNode   string // for display and status
	DestPath   string // beneath the peer's root
	Overwrite  bool
	Policy     Policy
	ChunkSize  int64 // 0 = node default
	Streams    int   // 0 = node default
	// SourceRegion, when set, sends a window of a region instead of SourcePath;
	// DestRegion writes into a window of a region on the peer instead of DestPath.
	SourceRegion *RegionRef
	DestRegion   *RegionRef
}

// progressEvery bounds how often Push reports progress while moving. Every
// report costs CPU on the way to whoever watches (the service streams it; the
// CLI decodes and prints it), often on a node that is itself moving the
// bytes: across two 1-vCPU testbed VMs `rxfer cp` spent ~8% of the receiving
// VM's CPU on ten reports a second, and at two a second the 64 MiB copies
// ran 4–10% faster (medians of side-by-side daemon pairs).
const progressEvery = 500 * time.Millisecond

// Push sends a file to peer and returns once the destination has committed
// it (or the transfer failed or was cancelled). progress, if not nil, is
// called with snapshots, never concurrently. Cancelling ctx cancels the transfer.
func (n *Node) Push(ctx context.Context, req PushRequest, peer Peer, progress func(Info)) (Info, error) {
	streams := cmp.Or(req.Streams, n.cfg.Streams)
	if req.ChunkSize != 0 && (req.ChunkSize < MinChunkSize || req.ChunkSize > MaxChunkSize) {
		return Info{}, fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrInvalid, req.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if streams < 1 || streams > 64 {
		return Info{}, fmt.Errorf("%w: %d streams (want 1-64)", ErrInvalid, streams)
	}
	var src *os.File
	var srcBase, size int64
	srcAnon := false
	if ref := req.SourceRegion; ref != nil {
		f, off, length, release, err := n.acquireRegion(*ref, -1)
		if err != nil {
			return Info{}, err
		}
		defer release()
		src, srcBase, size = f, off, length
		srcAnon = n.anonymousRegion(ref.Name, f)
		req.SourcePath = RegionRef{ref.Name, off, length}.String()
	} else {
		f, st, err := n.cfg.Root.OpenSource(req.SourcePath)
		if err != nil {
			return Info{}, err
		}
		defer f.Close()
		src, size = f, st.Size()
	}
	if req.DestRegion != nil {
		req.DestPath = req.DestRegion.String()
	}
	// Offer RDMA unless TCP was asked for: the queue pairs (one per lane)
	// exist before Prepare so the destination can connect to them at once.
	// Connections parked by an earlier transfer to the same destination are
	// offered first (their QPs are still connected to the destination's).
	senders, rdmaReason := n.offerLanes(req.Policy, req.DestNode, ChunkPlan{Size: size, ChunkSize: cmp.Or(req.ChunkSize, n.cfg.RDMA.Chunk)}.Count())
	reusable := false // every chunk went over RDMA and the destination committed: park the lanes
	defer func() { n.pool.Release(req.DestNode, senders, reusable) }()
	if req.Policy == PolicyRDMA && len(senders) == 0 {
		return Info{}, fmt.Errorf("%w: RDMA on node %s: %s", ErrTransportUnavailable, n.cfg.ID, rdmaReason)
	}
	chunkSize := cmp.Or(req.ChunkSize, n.cfg.ChunkSize)
	if len(senders) > 0 && req.ChunkSize == 0 {
		chunkSize = n.cfg.RDMA.Chunk
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rec := &record{cancel: cancel, info: Info{
		ID: NewID(), State: StatePending, Direction: Outgoing, SourcePath: req.SourcePath,
		DestNode: req.DestNode, DestPath: req.DestPath, BytesTotal: size,
		ChunkSize: chunkSize, Streams: streams, Started: time.Now(),
	}}
	if err := n.admit(rec); err != nil {
		return Info{}, err
	}
	p := &push{node: n, rec: rec, peer: peer, src: src, srcBase: srcBase, srcAnon: srcAnon, progress: progress, policy: req.Policy,
		plan: ChunkPlan{Size: size, ChunkSize: chunkSize}, rdma: senders, rdmaReason: rdmaReason}
	p.emit()
	err := p.run(ctx, req)
	if err == nil {
		// Committed over RDMA all the way: the lanes are parked for the next
		// transfer to this destination (the destination parked its side).
		reusable = p.rdmaDone
		n.finish(rec, StateCommitted, nil)
	} else {
		if c := context.Cause(ctx); c != nil && errors.Is(c, ErrCanceled) {
			err = c
		}
		st := StateFailed
		if errors.Is(err, ErrCanceled) || errors.Is(err, context.Canceled) {
			st = StateCancelled
		}
		if p.prepared {
			actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if aerr := peer.Abort(actx, rec.info.ID, err.Error()); aerr != nil {
				n.log.Warn("abort on destination failed", "transfer", rec.info.ID, "err", aerr)
			}
			acancel()
		}
		n.finish(rec, st, err)
		n.log.Warn("push ended", "transfer", rec.info.ID, "state", st, "err", err)
	}
	p.emitters.Wait()
	p.emit()
	return rec.snapshot(), err
}

// push is the sending half of one transfer.
type push struct {
	node    *Node
	rec     *record
	peer    Peer
	src     *os.File
	srcBase int64 // offset in src of the transfer's first byte
	srcAnon bool  // src is a memfd-backed region: RDMA WRITEs straight from its mapping
	// register: data is a read-write mapping of such a region, which the
	// RDMA sender registers instead of copying from it.
	register bool
	data     []byte       // the transfer's bytes of the source, mapped while run runs
	unmap    func() error // unmaps data
	plan     ChunkPlan
	progress func(Info)
	prepared bool
	policy   Policy

	rdma       []*rdma.Sender // the lanes offered (none: no RDMA)
	rdmaReason string         // why no RDMA was offered
	rdmaDone   bool           // every chunk was verified over RDMA

	emitMu   sync.Mutex
	lastEmit time.Time
	emitters sync.WaitGroup // progress reports started from the ack path
	sched    *scheduler
}

func (p *push) emit() {
	if p.progress == nil {
		return
	}
	p.emitMu.Lock()
	defer p.emitMu.Unlock()
	p.lastEmit = time.Now()
	p.progress(p.rec.snapshot())
}

// maybeEmit reports progress unless a report went out recently or one is in flight.
func (p *push) maybeEmit() {
	if p.progress == nil || !p.emitMu.TryLock() {
		return
	}
	defer p.emitMu.Unlock()
	if time.Since(p.lastEmit) < progressEvery {
		return
	}
	p.lastEmit = time.Now()
	p.progress(p.rec.snapshot())
}

func (p *push) run(ctx context.Context, req PushRequest) error {
	rec := p.rec
	rec.setState(StatePreparing)
	p.emit()
	if err := p.mapSource(); err != nil {
		return err
	}
	defer func() {
		for _, s := range p.rdma {
			s.DropSource() // registered ahead but not taken: before the unmap
		}
		if p.unmap != nil {
			p.unmap()
		}
	}()
	registered := p.registerAhead()
	resp, err := p.peer.Prepare(ctx, PrepareRequest{
		ID: rec.info.ID, SourceNode: p.node.cfg.ID, SourcePath: req.SourcePath, SourceName: sourceName(req),
		DestPath: req.DestPath, Size: p.plan.Size, ChunkSize: p.plan.ChunkSize, Overwrite: req.Overwrite, Policy: req.Policy,
		RDMA: offers(p.rdma), RDMAUnavailable: p.rdmaReason, DestRegion: req.DestRegion, SourceOffset: p.srcBase,
	})
	registered.Wait()
	if err != nil {
		return err
	}
	p.prepared = true
	prepared := time.Now()
	rec.mu.Lock()
	rec.info.Transport = resp.Transport
	rec.info.FallbackReason = resp.FallbackReason
	rec.info.DestPath = resp.FinalPath
	rec.info.State = StateMoving
	rec.mu.Unlock()
	p.emit()

	if err := p.move(ctx, resp); err != nil {
		return err
	}
	moved := time.Now()
	rec.setState(StateVerifying)
	p.emit()
	sum := p.plan.Combine(p.sched.crcs)
	cresp, err := p.peer.Commit(ctx, CommitRequest{ID: rec.info.ID, Size: p.plan.Size, CRC32C: sum})
	if err != nil {
		return err
	}
	if cresp.CRC32C != sum {
		return fmt.Errorf("%w: destination committed CRC32C %08x, source computed %08x", ErrCorrupt, cresp.CRC32C, sum)
	}
	now := time.Now()
	rec.mu.Lock()
	rec.info.Result = &Result{CRC32C: sum, FinalPath: cresp.FinalPath, Duration: now.Sub(rec.info.Started),
		Setup: prepared.Sub(rec.info.Started), Moving: moved.Sub(prepared), Commit: now.Sub(moved)}
	rec.mu.Unlock()
	return nil
}

// sourceName is the name a destination directory gives the file.
func sourceName(req PushRequest) string {
	if req.SourceRegion != nil {
		return req.SourceRegion.Name
	}
	return path.Base(req.SourcePath)
}

// transportSend moves the chunks it takes from queue and reports each one's
// verdict through done (the contract of fallback.Send).
type transportSend func(ctx context.Context, queue <-chan chunk.Chunk, done func(chunk.Chunk, error)) error

// tcpSend returns the TCP data channel's transportSend.
func (p *push) tcpSend(ch TCPChannel) (transportSend, error) {
	var tok fallback.Token
	if len(ch.Token) != len(tok) {
		return nil, fmt.Errorf("%w: destination sent a %d-byte token", ErrInvalid, len(ch.Token))
	}
	copy(tok[:], ch.Token)
	opt := fallback.SendOptions{Streams: p.rec.info.Streams, Mode: p.node.cfg.SendMode}
	return func(ctx context.Context, queue <-chan chunk.Chunk, done func(chunk.Chunk, error)) error {
		return fallback.Send(ctx, ch.Addr, tok, p.src, queue, done, opt)
	}, nil
}

// scheduler hands out chunks and collects verdicts across transports: a
// chunk that failed on a broken transport is queued again for the next one.
// CRCs are computed from a read-only mapping of the source just before each
// chunk is first queued, so checksumming overlaps sending and reads no byte
// twice from disk.
type scheduler struct {
	plan     ChunkPlan
	data     []byte   // read-only mapping of the source, from base
	base     int64    // offset in the source of data[0]; chunks carry source offsets
	crcs     []uint32 // CRC32C of each chunk, filled as chunks are first queued
	allAcked chan struct{}
	retry    chan struct{} // a chunk was added to retries

	mu       sync.Mutex
	acked    []bool
	attempts []int
	nAcked   int
	next     int // first chunk never queued
	retries  []chunk.Chunk
}

func (s *scheduler) verified() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nAcked
}

func (s *scheduler) attemptsOf(i uint32) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[i]
}

// requeue puts c back for sending; the caller holds s.mu.
func (s *scheduler) requeue(c chunk.Chunk) {
	s.retries = append(s.retries, c)
	select {
	case s.retry <- struct{}{}:
	default:
	}
}

// transportBroken ends one transport's attempt: its unacknowledged chunks
// were requeued and another transport may finish the job.
type transportBroken struct{ cause error }

func (e *transportBroken) Error() string { return e.cause.Error() }
func (e *transportBroken) Unwrap() error { return e.cause }

// attempt runs one transport until every chunk is verified (nil), a chunk
// fails verification for good (ErrCorrupt), the transport breaks (an error
// *transportBroken) or ctx ends.
func (p *push) attempt(ctx context.Context, send transportSend) error {
	s := p.sched
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	broken := make(chan struct{})
	var brokenOnce sync.Once
	var brokenErr error
	done := func(c chunk.Chunk, err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case s.acked[c.Index]:
		case err == nil:
			s.acked[c.Index] = true
			s.nAcked++
			p.rec.mu.Lock()
			p.rec.info.BytesDone += int64(c.Length)
			if secs := time.Since(p.rec.info.Started).Seconds(); secs > 0 {
				p.rec.info.Rate = float64(p.rec.info.BytesDone) / secs
			}
			p.rec.mu.Unlock()
			if s.nAcked == len(s.acked) {
				close(s.allAcked)
			}
			p.emitters.Go(p.maybeEmit)
		case errors.Is(err, chunk.ErrChecksum) && s.attempts[c.Index] < maxChunkAttempts:
			p.node.log.Warn("chunk failed verification at the destination; resending", "transfer", p.rec.info.ID, "chunk", c.Index, "attempt", s.attempts[c.Index])
			s.requeue(c)
		case errors.Is(err, chunk.ErrChecksum):
			cancel(fmt.Errorf("%w: chunk %d failed CRC32C verification %d times", ErrCorrupt, c.Index, s.attempts[c.Index]))
		default:
			s.requeue(c) // lost with its transport; the next transport sends it
			brokenOnce.Do(func() { brokenErr = err; close(broken) })
		}
	}
	queue := make(chan chunk.Chunk, 2*p.rec.info.Streams)
	feedErr := make(chan error, 1)
	go func() { feedErr <- p.feed(ctx, queue, broken) }()
	sendErr := send(ctx, queue, done)
	ferr := <-feedErr
	select {
	case <-s.allAcked:
		return nil // every chunk is verified; a stream that broke afterwards lost nothing
	default:
	}
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	if ferr != nil {
		return ferr
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if brokenErr == nil {
		brokenErr = sendErr
	}
	if brokenErr == nil {
		brokenErr = errors.New("the transport stopped with chunks unacknowledged")
	}
	return &transportBroken{dataChannelErr(brokenErr)}
}

// feed queues chunks (resends first) until all are acknowledged, the
// transport broke or ctx ended, then closes queue.
func (p *push) feed(ctx context.Context, queue chan<- chunk.Chunk, broken <-chan struct{}) (err error) {
	s := p.sched
	defer close(queue)
	// A source truncated under us faults the mapping: report it instead of crashing.
	debug.SetPanicOnFault(true)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: source file changed while being read (%v)", ErrInvalid, r)
		}
	}()
	for {
		s.mu.Lock()
		var c chunk.Chunk
		have := len(s.retries) > 0
		if have {
			c, s.retries = s.retries[0], s.retries[1:]
		} else if s.next < len(s.crcs) {
			i := s.next
			s.next++
			s.mu.Unlock()
			off, n := s.plan.Span(i)
			s.crcs[i] = crc32c.Checksum(s.data[off : off+n])
			c = chunk.Chunk{Index: uint32(i), Offset: s.base + off, Length: uint32(n), CRC: s.crcs[i]}
			s.mu.Lock()
			have = true
		}
		if have {
			s.attempts[c.Index]++
			c.CRC = s.crcs[c.Index] // a resend of a corrupted chunk carries the true CRC again
			if corrupt := p.node.cfg.Hooks.CorruptChunk; corrupt != nil && corrupt(c.Index, s.attempts[c.Index]) {
				c.CRC ^= 1 // as if the bytes were corrupted on the wire
			}
		}
		s.mu.Unlock()
		if !have {
			select {
			case <-s.retry:
				continue
			case <-s.allAcked:
			case <-broken:
			case <-ctx.Done():
			}
			return nil
		}
		select {
		case queue <- c:
		case <-broken:
			s.mu.Lock()
			s.attempts[c.Index]--
			s.requeue(c)
			s.mu.Unlock()
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// move sends every chunk with the negotiated transport.
func (p *push) move(ctx context.Context, resp PrepareResponse) error {
	count := p.plan.Count()
	p.sched = &scheduler{plan: p.plan, crcs: make([]uint32, count), acked: make([]bool, count),
		attempts: make([]int, count), allAcked: make(chan struct{}), retry: make(chan struct{}, 1)}
	if count == 0 {
		return nil
	}
	p.sched.data, p.sched.base = p.data, p.srcBase
	if resp.Transport == TransportRDMA {
		err := p.moveRDMA(ctx, resp)
		var broken *transportBroken
		if err == nil || !errors.As(err, &broken) || p.policy != PolicyAuto || resp.TCP.Addr == "" {
			return err
		}
		p.rec.mu.Lock()
		p.rec.info.Transport = TransportTCP
		p.rec.info.FallbackReason = fmt.Sprintf("RDMA failed after %d of %d bytes (%v); continuing over TCP",
			p.rec.info.BytesDone, p.plan.Size, err)
		p.rec.mu.Unlock()
		p.node.log.Warn("RDMA failed; continuing over TCP", "transfer", p.rec.info.ID, "err", err)
		p.emit()
	}
	tcp, err := p.tcpSend(resp.TCP)
	if err != nil {
		return err
	}
	return p.attempt(ctx, tcp)
}

// moveRDMA connects the lanes the destination took and stripes the chunks
// over them: each lane's Send takes the next chunk from the shared queue
// when it has room. A failure to connect counts as a broken transport, and
// so does any lane breaking: the transfer continues over TCP (under AUTO)
// with every chunk not yet verified.
func (p *push) moveRDMA(ctx context.Context, resp PrepareResponse) error {
	lanes, err := p.attachLanes(resp)
	if err != nil {
		return err
	}
	// The depth is the transfer's: each lane gets its share.
	depth := cmp.Or(p.node.cfg.RDMA.Depth, rdma.DefaultDepth)
	depth = max(1, (depth+len(lanes)-1)/len(lanes))
	src := rdma.Source{File: p.src, Bytes: p.sched.data, Base: p.srcBase, Register: p.register}
	err = p.attempt(ctx, func(ctx context.Context, queue <-chan chunk.Chunk, done func(chunk.Chunk, error)) error {
		if brk := p.node.cfg.Hooks.BreakRDMA; brk != nil {
			var mu sync.Mutex // lanes answer concurrently: each call sees its own count
			inner := done
			done = func(c chunk.Chunk, err error) {
				mu.Lock()
				inner(c, err)
				verified := p.sched.verified()
				mu.Unlock()
				if err == nil && brk(verified) {
					lanes[0].Break() // the others stop when the attempt does
				}
			}
		}
		errs := make([]error, len(lanes))
		var wg sync.WaitGroup
		for i, s := range lanes {
			wg.Go(func() { errs[i] = s.Send(ctx, src, queue, done, depth) })
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	p.rdmaDone = err == nil
	return err
}

// mapSource maps the source (nothing for an empty transfer): a memfd-backed
// region read-write when RDMA lanes are offered (on 6.1 a read-only
// MAP_SHARED mapping cannot be registered; nothing writes through it), and
// then registered by the lanes; anything else read-only.
func (p *push) mapSource() error {
	if p.plan.Count() == 0 {
		return nil
	}
	var err error
	if p.srcAnon && len(p.rdma) > 0 {
		p.data, p.unmap, err = mapRange(p.src, p.srcBase, p.plan.Size, unix.PROT_READ|unix.PROT_WRITE)
		p.register = err == nil
	}
	if p.data == nil {
		if p.data, p.unmap, err = mapRange(p.src, p.srcBase, p.plan.Size, unix.PROT_READ); err != nil {
			return fmt.Errorf("mapping source: %w", err)
		}
		unix.Madvise(p.data, unix.MADV_SEQUENTIAL) // a hint: refused (ignored) if the range starts mid-page
	}
	return nil
}

// registerAhead registers a region source for each lane while the
// destination prepares, one lane after the other (pinning the same pages
// from two threads at once was slower): otherwise each lane's Send pins
// every page after Prepare returned, while the destination waits. Across
// two 1-vCPU testbed VMs, daemon pairs side by side, six 64 MiB
// region→region copies each: median 2.12 s before, 2.01 s with it (moving
// phase 1.96 → 1.87 s). A lane whose registration fails registers in Send
// as before.
func (p *push) registerAhead() *sync.WaitGroup {
	var wg sync.WaitGroup
	if !p.register {
		return &wg
	}
	wg.Go(func() {
		for _, s := range p.rdma {
			if err := s.RegisterSource(p.data); err != nil {
				p.node.log.Info("source not registered ahead; the lane registers it when sending", "transfer", p.rec.info.ID, "err", err)
			}
		}
	})
	return &wg
}

// dataChannelErr classifies a data-channel failure: a broken or refused
// connection means the destination is gone or gave up (fallback's message
// already names the stream and chunk).
func dataChannelErr(err error) error {
	if errors.Is(err, fallback.ErrStreamBroken) || errors.Is(err, fallback.ErrUnknownToken) {
		return fmt.Errorf("%w: data connection to the destination failed: %w", ErrPeerUnavailable, err)
	}
	return err
}
