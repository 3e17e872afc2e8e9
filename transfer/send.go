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

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/fallback"
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
}

// progressEvery bounds how often Push reports progress while moving.
const progressEvery = 100 * time.Millisecond

// Push sends a file to peer and returns once the destination has committed
// it (or the transfer failed or was cancelled). progress, if not nil, is
// called with snapshots, never concurrently. Cancelling ctx cancels the transfer.
func (n *Node) Push(ctx context.Context, req PushRequest, peer Peer, progress func(Info)) (Info, error) {
	chunkSize := cmp.Or(req.ChunkSize, n.cfg.ChunkSize)
	streams := cmp.Or(req.Streams, n.cfg.Streams)
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return Info{}, fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrInvalid, chunkSize, MinChunkSize, MaxChunkSize)
	}
	if streams < 1 || streams > 64 {
		return Info{}, fmt.Errorf("%w: %d streams (want 1-64)", ErrInvalid, streams)
	}
	if req.Policy == PolicyRDMA {
		return Info{}, fmt.Errorf("%w: RDMA on node %s: %s", ErrTransportUnavailable, n.cfg.ID, n.cfg.RDMAUnavailable)
	}
	src, st, err := n.cfg.Root.OpenSource(req.SourcePath)
	if err != nil {
		return Info{}, err
	}
	defer src.Close()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rec := &record{cancel: cancel, info: Info{
		ID: NewID(), State: StatePending, Direction: Outgoing, SourcePath: req.SourcePath,
		DestNode: req.DestNode, DestPath: req.DestPath, BytesTotal: st.Size(),
		ChunkSize: chunkSize, Streams: streams, Started: time.Now(),
	}}
	if err := n.admit(rec); err != nil {
		return Info{}, err
	}
	p := &push{node: n, rec: rec, peer: peer, src: src, progress: progress,
		plan: ChunkPlan{Size: st.Size(), ChunkSize: chunkSize}}
	p.emit()
	err = p.run(ctx, req)
	if err == nil {
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
	node     *Node
	rec      *record
	peer     Peer
	src      *os.File
	plan     ChunkPlan
	progress func(Info)
	prepared bool

	emitMu   sync.Mutex
	lastEmit time.Time
	emitters sync.WaitGroup // progress reports started from the ack path
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
	resp, err := p.peer.Prepare(ctx, PrepareRequest{
		ID: rec.info.ID, SourceNode: p.node.cfg.ID, SourcePath: req.SourcePath, SourceName: path.Base(req.SourcePath),
		DestPath: req.DestPath, Size: p.plan.Size, ChunkSize: p.plan.ChunkSize, Overwrite: req.Overwrite, Policy: req.Policy,
	})
	if err != nil {
		return err
	}
	p.prepared = true
	rec.mu.Lock()
	rec.info.Transport = resp.Transport
	rec.info.FallbackReason = resp.FallbackReason
	rec.info.DestPath = resp.FinalPath
	rec.info.State = StateMoving
	rec.mu.Unlock()
	p.emit()

	crcs, err := p.send(ctx, resp.TCP)
	if err != nil {
		return err
	}
	rec.setState(StateVerifying)
	p.emit()
	sum := p.plan.Combine(crcs)
	cresp, err := p.peer.Commit(ctx, CommitRequest{ID: rec.info.ID, Size: p.plan.Size, CRC32C: sum})
	if err != nil {
		return err
	}
	if cresp.CRC32C != sum {
		return fmt.Errorf("%w: destination committed CRC32C %08x, source computed %08x", ErrCorrupt, cresp.CRC32C, sum)
	}
	rec.mu.Lock()
	rec.info.Result = &Result{CRC32C: sum, FinalPath: cresp.FinalPath, Duration: time.Since(rec.info.Started)}
	rec.mu.Unlock()
	return nil
}

// send moves every chunk over the TCP data channel and returns the chunks'
// CRC32Cs once the destination acknowledged each as verified. CRCs are
// computed from a read-only mapping of the source just before each chunk is
// queued, so checksumming overlaps sending and reads no byte twice from disk.
func (p *push) send(ctx context.Context, ch TCPChannel) (crcs []uint32, err error) {
	count := p.plan.Count()
	crcs = make([]uint32, count)
	if count == 0 {
		return crcs, nil
	}
	var tok fallback.Token
	if len(ch.Token) != len(tok) {
		return nil, fmt.Errorf("%w: destination sent a %d-byte token", ErrInvalid, len(ch.Token))
	}
	copy(tok[:], ch.Token)
	data, err := unix.Mmap(int(p.src.Fd()), 0, int(p.plan.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping source: %w", err)
	}
	defer unix.Munmap(data)
	unix.Madvise(data, unix.MADV_SEQUENTIAL)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu       sync.Mutex
		acked    = make([]bool, count)
		attempts = make([]int, count)
		nAcked   int
		retries  []fallback.Chunk
	)
	retry := make(chan struct{}, 1)
	allAcked := make(chan struct{})
	queue := make(chan fallback.Chunk, 2*p.rec.info.Streams)

	done := func(c fallback.Chunk, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case acked[c.Index]:
			return
		case err == nil:
			acked[c.Index] = true
			nAcked++
			p.rec.mu.Lock()
			p.rec.info.BytesDone += int64(c.Length)
			if s := time.Since(p.rec.info.Started).Seconds(); s > 0 {
				p.rec.info.Rate = float64(p.rec.info.BytesDone) / s
			}
			p.rec.mu.Unlock()
			if nAcked == count {
				close(allAcked)
			}
			p.emitters.Go(p.maybeEmit)
		case errors.Is(err, fallback.ErrChecksum) && attempts[c.Index] < maxChunkAttempts:
			p.node.log.Warn("chunk failed verification at the destination; resending", "transfer", p.rec.info.ID, "chunk", c.Index, "attempt", attempts[c.Index])
			retries = append(retries, c)
			select {
			case retry <- struct{}{}:
			default:
			}
		case errors.Is(err, fallback.ErrChecksum):
			cancel(fmt.Errorf("%w: chunk %d failed CRC32C verification %d times", ErrCorrupt, c.Index, attempts[c.Index]))
		default:
			cancel(dataChannelErr(err))
		}
	}
	corrupt := p.node.cfg.Hooks.CorruptChunk
	opt := fallback.SendOptions{Streams: p.rec.info.Streams, Mode: p.node.cfg.SendMode}
	if corrupt != nil {
		opt.Corrupt = func(c fallback.Chunk) bool {
			mu.Lock()
			a := attempts[c.Index]
			mu.Unlock()
			return corrupt(c.Index, a)
		}
	}
	feedErr := make(chan error, 1)
	go func() { feedErr <- p.feed(ctx, data, crcs, queue, &mu, attempts, &retries, retry, allAcked) }()
	sendErr := fallback.Send(ctx, ch.Addr, tok, p.src, queue, done, opt)
	ferr := <-feedErr
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return nil, c
	}
	if ferr != nil {
		return nil, ferr
	}
	select {
	case <-allAcked:
		sendErr = nil // every chunk is verified at the destination; a stream that broke afterwards lost nothing
	default:
	}
	if sendErr != nil {
		return nil, dataChannelErr(sendErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	return crcs, nil
}

// feed queues chunks (resends first) until all are acknowledged, then closes queue.
func (p *push) feed(ctx context.Context, data []byte, crcs []uint32, queue chan<- fallback.Chunk,
	mu *sync.Mutex, attempts []int, retries *[]fallback.Chunk, retry <-chan struct{}, allAcked <-chan struct{}) (err error) {
	defer close(queue)
	// A source truncated under us faults the mapping: report it instead of crashing.
	debug.SetPanicOnFault(true)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: source file changed while being read (%v)", ErrInvalid, r)
		}
	}()
	put := func(c fallback.Chunk) bool {
		mu.Lock()
		attempts[c.Index]++
		mu.Unlock()
		select {
		case queue <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	next := 0
	for {
		mu.Lock()
		var c fallback.Chunk
		haveRetry := len(*retries) > 0
		if haveRetry {
			c = (*retries)[0]
			*retries = (*retries)[1:]
		}
		mu.Unlock()
		switch {
		case haveRetry:
		case next < len(crcs):
			off, n := p.plan.Span(next)
			crcs[next] = ChecksumBytes(data[off : off+n])
			c = fallback.Chunk{Index: uint32(next), Offset: off, Length: uint32(n), CRC: crcs[next]}
			next++
		default:
			select {
			case <-retry:
				continue
			case <-allAcked:
				return nil
			case <-ctx.Done():
				return nil
			}
		}
		if !put(c) {
			return nil
		}
	}
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
