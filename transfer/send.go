package transfer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/internal/crc32c"
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
	// DataEncryption overrides the node's policy for this copy
	// (EncryptDefault: the node's).
	DataEncryption DataEncryption
	// Verify adds the whole-file keyed BLAKE3 (VerifyMAC).
	Verify VerifyMode
	// NoResume starts over even if the destination holds a partial file of
	// this source (a region destination never resumes).
	NoResume bool
	// Recursive copies a directory SourcePath as a tree (tree.go); a file
	// is copied as without it. The tree's root is DestPath/<its name> when
	// DestPath is a directory, else DestPath; with Contents (SRC/) it is
	// DestPath. Preserve keeps mode, mtime and (as root) owner.
	Recursive, Contents, Preserve bool
}

// progressEvery bounds how often Push reports progress while moving: every
// report costs CPU on a node that may be moving the bytes too (README.md).
const progressEvery = 500 * time.Millisecond

// Push sends a file to peer and returns once the destination has committed
// it (or the transfer failed or was cancelled). progress, if not nil, is
// called with snapshots, never concurrently. Cancelling ctx cancels the transfer.
func (n *Node) Push(ctx context.Context, req PushRequest, peer Peer, progress func(Info)) (Info, error) {
	streams, err := n.validatePush(&req)
	if err != nil {
		return Info{}, err
	}
	src, err := n.openSource(&req)
	if err != nil {
		return Info{}, err
	}
	defer src.close()
	// Offer RDMA unless TCP was asked for: the queue pairs (one per lane)
	// exist before Prepare so the destination can connect to them at once.
	lanes, rdmaReason := n.offerLanes(req.Policy, req.DestNode, ChunkPlan{Size: src.size, ChunkSize: n.chunkSize(req.ChunkSize, true)}.Count())
	parked := false
	defer func() {
		if !parked {
			n.pool.Release(req.DestNode, lanes, false)
		}
	}()
	if req.Policy == PolicyRDMA && len(lanes) == 0 {
		return Info{}, fmt.Errorf("%w: RDMA on node %s: %s", ErrTransportUnavailable, n.cfg.ID, rdmaReason)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p, err := n.admitPush(req, src, streams, lanes, rdmaReason, peer, progress, cancel)
	if err != nil {
		return Info{}, err
	}
	err = p.run(ctx, req)
	if err == nil && p.rdmaDone {
		// Committed over RDMA all the way: park the lanes for the next
		// transfer to this destination (the destination parked its side).
		n.pool.Release(req.DestNode, lanes, true)
		parked = true
	}
	err = p.end(ctx, err)
	return p.rec.snapshot(), err
}

// validatePush checks a push request and returns its stream count; a
// region destination is named by its window.
func (n *Node) validatePush(req *PushRequest) (streams int, err error) {
	streams = cmp.Or(req.Streams, n.cfg.Streams)
	if req.ChunkSize != 0 && (req.ChunkSize < MinChunkSize || req.ChunkSize > MaxChunkSize) {
		return 0, fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrInvalid, req.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if streams < 1 || streams > 64 {
		return 0, fmt.Errorf("%w: %d streams (want 1-64)", ErrInvalid, streams)
	}
	if req.DestRegion != nil {
		req.DestPath = req.DestRegion.String()
	}
	return streams, nil
}

// chunkSize is the one place a push's chunk size is decided: the request's,
// else the RDMA chunk size when RDMA lanes carry it (the destination's slots
// are that size), else the node's.
func (n *Node) chunkSize(requested int64, overRDMA bool) int64 {
	switch {
	case requested != 0:
		return requested
	case overRDMA:
		return n.cfg.RDMA.Chunk
	}
	return n.cfg.ChunkSize
}

// pushSource is what a push reads: a file beneath the root, or a window of
// a region (SourcePath then names the window).
type pushSource struct {
	file  *os.File
	base  int64 // offset in file of the transfer's first byte
	size  int64
	anon  bool        // a memfd-backed region: RDMA WRITEs straight from its mapping
	close func()      // closes the file or releases the region
	tree  *treeSource // a directory tree (file is nil)
	// What a destination's partial file must have been written from to
	// be resumed (SourceIdentity).
	mtimeNs, inode, generation uint64
}

// openSource opens the source of a push.
func (n *Node) openSource(req *PushRequest) (pushSource, error) {
	if ref := req.SourceRegion; ref != nil {
		f, off, length, release, err := n.acquireRegion(*ref, -1)
		if err != nil {
			return pushSource{}, err
		}
		req.SourcePath = RegionRef{ref.Name, off, length}.String()
		return pushSource{file: f, base: off, size: length, anon: n.anonymousRegion(ref.Name, f), close: release,
			generation: n.regionGeneration(ref.Name)}, nil
	}
	if n.cfg.Root.isDir(req.SourcePath) {
		if !req.Recursive {
			return pushSource{}, fmt.Errorf("%w: source %s is a directory; copy it with -r (--recursive)", ErrInvalid, shown(req.SourcePath))
		}
		switch {
		case req.Verify == VerifyMAC:
			return pushSource{}, fmt.Errorf("%w: --verify mac does not combine with directory trees (each chunk is CRC32C-verified)", ErrInvalid)
		case req.DestRegion != nil:
			return pushSource{}, fmt.Errorf("%w: a directory tree cannot be copied into a region", ErrInvalid)
		}
		t, err := n.openTree(req.SourcePath)
		if err != nil {
			return pushSource{}, err
		}
		t.m.Preserve = req.Preserve
		return pushSource{size: t.layout.size, close: t.close, tree: t}, nil
	}
	f, st, err := n.cfg.Root.OpenSource(req.SourcePath)
	if err != nil {
		return pushSource{}, err
	}
	src := pushSource{file: f, size: st.Size(), close: func() { f.Close() }, mtimeNs: uint64(st.ModTime().UnixNano())}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		src.inode = sys.Ino
	}
	return src, nil
}

// admitPush registers the outgoing transfer (the node's concurrency limit
// applies) and returns it, reported once as pending.
func (n *Node) admitPush(req PushRequest, src pushSource, streams int, lanes []*rdma.Sender, rdmaReason string, peer Peer,
	progress func(Info), cancel context.CancelCauseFunc) (*push, error) {
	chunkSize := n.chunkSize(req.ChunkSize, len(lanes) > 0)
	if src.tree != nil && req.ChunkSize == 0 && len(lanes) == 0 {
		chunkSize = src.tree.chunkSize(chunkSize)
	}
	rec := &record{cancel: cancel, peer: req.DestNode, info: Info{
		ID: NewID(), State: StatePending, Direction: Outgoing, SourcePath: req.SourcePath,
		DestNode: req.DestNode, DestPath: req.DestPath, BytesTotal: src.size,
		ChunkSize: chunkSize, Streams: streams, Started: time.Now(), Verify: req.Verify.String(),
	}}
	if src.tree != nil {
		rec.info.FilesTotal, rec.info.Warnings, rec.info.Tree = src.tree.filesTotal(), src.tree.warnings, true
	}
	if err := n.admit(rec); err != nil {
		return nil, err
	}
	p := &push{node: n, rec: rec, peer: peer, src: src.file, srcBase: src.base, srcAnon: src.anon, progress: progress, policy: req.Policy,
		plan: ChunkPlan{Size: src.size, ChunkSize: chunkSize}, rdma: lanes, rdmaReason: rdmaReason, ident: src,
		encryption: req.DataEncryption, verify: req.Verify, tree: src.tree}
	p.emit()
	return p, nil
}

// end records how the push ended and returns its error: committed, or
// failed or cancelled, the destination told to abort once it had prepared.
func (p *push) end(ctx context.Context, err error) error {
	n, rec := p.node, p.rec
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
			rec.mu.Lock()
			discard := rec.discard || errors.Is(err, ErrSourceChanged)
			rec.mu.Unlock()
			if aerr := p.peer.Abort(actx, rec.info.ID, err.Error(), discard); aerr != nil {
				n.logger(rec).Warn("abort on destination failed", "err", aerr)
			}
			acancel()
		}
		n.finish(rec, st, err)
		n.logger(rec).Warn("push ended", "state", st, "err", err)
	}
	p.emitters.Wait()
	p.emit()
	return err
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
	register   bool
	data       []byte       // the transfer's bytes of the source, mapped while run runs
	unmap      func() error // unmaps data
	plan       ChunkPlan
	progress   func(Info)
	prepared   bool      // the destination prepared: it must be told if the push fails
	preparedAt time.Time // when, for Result.Setup
	policy     Policy

	ident      pushSource        // the source's identity for a resume
	resumed    map[uint32]uint32 // chunks the destination holds: their CRC32C
	rdma       []*rdma.Sender    // the lanes offered (none: no RDMA)
	rdmaReason string            // why no RDMA was offered
	rdmaDone   bool              // every chunk was verified over RDMA

	encryption DataEncryption // the copy's data-channel policy (encrypt.go)
	verify     VerifyMode
	mac        *sourceMAC // the running whole-file MAC (mac.go); nil without VerifyMAC

	emitMu   sync.Mutex
	lastEmit time.Time
	emitters sync.WaitGroup // progress reports started from the ack path
	sched    *scheduler
	tree     *treeSource // a directory tree (src is nil)
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

// run moves the admitted transfer: map the source, prepare the
// destination, move every chunk, commit.
func (p *push) run(ctx context.Context, req PushRequest) error {
	p.rec.setState(StatePreparing)
	if !p.inlineEligible(req) { // an inline copy's Prepare is its whole life: one event less per small copy
		p.emit()
	}
	if err := p.mapSource(); err != nil {
		return err
	}
	defer p.unmapSource()
	var inline *InlineData
	if p.inlineEligible(req) && len(p.data) == int(p.plan.Size) {
		inline = &InlineData{Bytes: p.data, CRC32C: crc32c.Checksum(p.data)}
	}
	resp, err := p.prepare(ctx, req, inline)
	if err != nil {
		return err
	}
	if resp.Committed != nil {
		return p.inlineCommitted(inline, resp)
	}
	if err := p.move(ctx, resp); err != nil {
		return err
	}
	return p.commit(ctx)
}

// prepare asks the destination to set up the transfer, offering the lanes
// (a region source registers with them meanwhile), and records its answer.
func (p *push) prepare(ctx context.Context, req PushRequest, inline *InlineData) (PrepareResponse, error) {
	rec := p.rec
	registered := p.registerAhead()
	var err error
	if p.mac, err = startMAC(p.verify, p.data, !p.register); err != nil {
		return PrepareResponse{}, err
	}
	var macKey []byte
	if p.mac != nil {
		macKey = p.mac.key
	}
	preq := PrepareRequest{
		ID: rec.info.ID, SourceNode: p.node.cfg.ID, SourcePath: req.SourcePath, SourceName: sourceName(req),
		DestPath: req.DestPath, Size: p.plan.Size, ChunkSize: p.plan.ChunkSize, Overwrite: req.Overwrite, Policy: req.Policy,
		RDMA: offers(p.rdma), RDMAUnavailable: p.rdmaReason, DestRegion: req.DestRegion, SourceOffset: p.srcBase,
		MACKey:        macKey,
		SourceMtimeNs: int64(p.ident.mtimeNs), SourceInode: p.ident.inode, SourceGeneration: p.ident.generation, NoResume: req.NoResume,
		Inline: inline,
	}
	if p.tree != nil {
		preq.Tree, preq.TreeContents, preq.SourceName = p.tree.m, req.Contents, treeName(req.SourcePath)
	}
	resp, err := p.peer.Prepare(ctx, preq)
	registered.Wait()
	if err != nil {
		return PrepareResponse{}, err
	}
	p.prepared = true
	p.preparedAt = time.Now()
	if p.tree != nil && !resp.TreeAccepted {
		// An rxfer that predates trees took the Prepare as one file of
		// the stream's bytes: end() aborts it, discarding that file.
		p.rec.mu.Lock()
		p.rec.discard = true
		p.rec.mu.Unlock()
		return PrepareResponse{}, fmt.Errorf("%w: destination %s does not support directory trees (its rxfer predates them); upgrade it to copy with -r", ErrTransportUnavailable, p.rec.info.DestNode)
	}
	if p.resumed, err = p.checkResumed(resp.Resumed); err != nil {
		return PrepareResponse{}, err
	}
	rec.mu.Lock()
	rec.info.ResumeNote = resp.ResumeNote
	rec.info.Transport = resp.Transport
	rec.info.FallbackReason = resp.FallbackReason
	rec.info.DestPath = resp.FinalPath
	if resp.Committed == nil {
		rec.info.State = StateMoving
	}
	rec.mu.Unlock()
	if len(p.rdma) > 0 && resp.Transport == TransportTCP && req.Policy == PolicyAuto {
		// Both ends offered RDMA, and the destination could not set it up.
		p.node.cfg.Observer.RDMAFailover(FailoverSetup)
	}
	if resp.Committed == nil { // an inline copy is done: its next event is the last
		p.emit()
	}
	return resp, nil
}

// commit asks the destination to publish the file with the whole-file
// CRC32C and records the result.
func (p *push) commit(ctx context.Context) (err error) {
	rec := p.rec
	moved := time.Now()
	rec.setState(StateVerifying)
	p.emit()
	sum := p.plan.Combine(p.sched.crcs)
	var mac []byte
	if p.mac != nil {
		if mac, err = p.mac.result(); err != nil {
			return err
		}
	}
	cresp, err := p.peer.Commit(ctx, CommitRequest{ID: rec.info.ID, Size: p.plan.Size, CRC32C: sum, MAC: mac})
	if err != nil {
		return err
	}
	if p.mac != nil && !cresp.MACVerified {
		return fmt.Errorf("%w: destination %s committed without checking the whole-file MAC (--verify mac needs rxfer with it on both nodes)", ErrInvalid, rec.info.DestNode)
	}
	if cresp.CRC32C != sum {
		return fmt.Errorf("%w: destination committed CRC32C %08x, source computed %08x", ErrCorrupt, cresp.CRC32C, sum)
	}
	now := time.Now()
	rec.mu.Lock()
	rec.info.Result = &Result{CRC32C: sum, FinalPath: cresp.FinalPath, Duration: now.Sub(rec.info.Started),
		Setup: p.preparedAt.Sub(rec.info.Started), Moving: moved.Sub(p.preparedAt), Commit: now.Sub(moved)}
	rec.info.FilesDone = rec.info.FilesTotal
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

// tcpSend returns the TCP data channel's transportSend.
func (p *push) tcpSend(ch TCPChannel) (transportSend, error) {
	var tok fallback.Token
	if len(ch.Token) != len(tok) {
		return nil, fmt.Errorf("%w: destination sent a %d-byte token", ErrInvalid, len(ch.Token))
	}
	copy(tok[:], ch.Token)
	// No more connections than chunks left to send: each costs a TCP and a
	// preamble round trip on both nodes, and Send waits for all of them to
	// end (a 4 KiB copy opened four for its one chunk). Resumed chunks are
	// never sent; after an RDMA failure they are among the verified ones.
	left := p.plan.Count() - max(len(p.resumed), p.sched.verified())
	opt := fallback.SendOptions{Streams: max(1, min(p.rec.info.Streams, left)), Mode: p.node.cfg.SendMode, Connected: p.rec.setEncryption}
	if err := p.encryptTCP(ch, &opt); err != nil {
		return nil, err
	}
	if err := p.treeLayout(&opt); err != nil {
		return nil, err
	}
	return func(ctx context.Context, queue <-chan chunk.Chunk, done func(chunk.Chunk, error)) error {
		return fallback.Send(ctx, ch.Addr, tok, p.src, queue, done, opt)
	}, nil
}

// move sends every chunk with the negotiated transport.
func (p *push) move(ctx context.Context, resp PrepareResponse) error {
	p.sched = newScheduler(p.plan, p.data, p.srcBase)
	p.sched.resumed = p.resumed
	switch {
	case p.register || p.tree != nil: // a tree reads its files, not a mapping
	case resp.Transport == TransportRDMA:
		p.sched.release = releaseAfterAck
	default:
		p.sched.release = releaseAfterCRC
	}
	if p.tree != nil {
		p.sched.crcOf = p.tree.crc
		if p.tree.spansChunks(p.plan.ChunkSize) {
			p.sched.order = stridedOrder(p.plan.Count(), p.rec.info.Streams)
		}
		p.tree.startProgress(p.plan)
		p.rec.mu.Lock()
		p.rec.info.FilesDone = p.tree.filesDone
		p.rec.mu.Unlock()
	}
	if p.plan.Count() == 0 {
		return nil
	}
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
		p.node.logger(p.rec).Warn("RDMA failed; continuing over TCP", "err", err)
		p.node.cfg.Observer.RDMAFailover(FailoverBroken)
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
	if err := p.treeRDMASource(&src); err != nil {
		return err
	}
	err = p.attempt(ctx, func(ctx context.Context, queue <-chan chunk.Chunk, done func(chunk.Chunk, error)) error {
		if brk := knobs.breakRDMA; brk != nil {
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
	if p.plan.Count() == 0 || p.tree != nil { // a tree's files are read through extents
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

// unmapSource drops source registrations no lane took, then the mapping.
func (p *push) unmapSource() {
	p.mac.abandon() // it reads the mapping
	for _, s := range p.rdma {
		s.DropSource() // registered ahead but not taken: before the unmap
	}
	if p.unmap != nil {
		p.unmap()
	}
}

// registerAhead registers a region source for each lane while the
// destination prepares, one lane after the other (pinning the same pages
// from two threads at once was slower): otherwise each lane's Send pins
// every page after Prepare returned, while the destination waits (measured
// in README.md). A lane whose registration fails registers in Send as before.
func (p *push) registerAhead() *sync.WaitGroup {
	var wg sync.WaitGroup
	if !p.register {
		return &wg
	}
	wg.Go(func() {
		for _, s := range p.rdma {
			if err := s.RegisterSource(p.data); err != nil {
				p.node.logger(p.rec).Info("source not registered ahead; the lane registers it when sending", "err", err)
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
