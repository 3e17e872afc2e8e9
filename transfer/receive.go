package transfer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/rdma"
)

// incoming is the receiving half of a transfer; it is the chunk.Sink the
// data listener writes into. Its fields are guarded by the record's mu.
type incoming struct {
	rec     *record
	node    *Node
	dest    target
	srcBase int64 // the source's offset of byte 0 (chunks carry source offsets)
	plan    ChunkPlan
	crcs    []uint32 // verified CRC32C of each landed chunk
	landed  []bool   // verified: final, every later claim is refused
	claimed []bool   // admitted and not landed yet: in flight on one connection
	nLanded int
	viaRDMA int // chunks of nLanded that landed over RDMA
	source  string
	release func()           // unregisters the TCP data-channel token (nil: no TCP)
	rdma    []*rdma.Receiver // the RDMA lanes (none: no RDMA)
	unmap   func() error     // unmaps a direct RDMA window or mapped, after the lanes are closed
	mapped  []byte           // the destination range, mapped for staging RDMA lanes (rdma.MappedSink)
	closed  sync.Once        // closeChannels ran
	resume  *resumeState     // a resumable partial file's journal (nil: not resumable)
	idle    *time.Timer      // the first-byte deadline, then the idle timeout
	gotData atomic.Bool      // a chunk arrived (sawData)
	movingT time.Time
	macKey  []byte    // the whole-file MAC's key from Prepare (mac.go); nil: none
	tree    *treeDest // a directory tree's destination (nil: a file or region)
}

// target is where an incoming transfer's bytes go: a partial file renamed
// into place on commit (*Destination), or a window of a region.
type target interface {
	File() *os.File
	Base() int64 // offset in File of the transfer's first byte
	Path() string
	Commit() error
	Remove()
}

// Prepare is the destination's half of setting up a transfer: validate the
// request, admit it, create the destination (a preallocated partial file or
// a region window), set up the data channels (RDMA lanes, a single-use TCP
// token) and start receiving.
func (n *Node) Prepare(ctx context.Context, req PrepareRequest) (PrepareResponse, error) {
	if req.Tree != nil {
		whole, done, err := n.gatherTree(req)
		if err != nil || !done {
			return PrepareResponse{TreePending: err == nil}, err
		}
		req = whole
	}
	if err := n.cfg.Expect.check(&req); err != nil {
		return PrepareResponse{}, err
	}
	if err := n.validatePrepare(req); err != nil {
		return PrepareResponse{}, err
	}
	if err := validMACKey(req.MACKey); err != nil {
		return PrepareResponse{}, err
	}
	if err := validInline(req); err != nil {
		return PrepareResponse{}, err
	}
	rec := &record{peer: req.SourceNode, info: Info{
		ID: req.ID, State: StatePreparing, Direction: Incoming, SourcePath: req.SourceNode + ":" + req.SourcePath,
		DestNode: n.cfg.ID, DestPath: req.DestPath, BytesTotal: req.Size, Transport: TransportTCP,
		ChunkSize: req.ChunkSize, Started: time.Now(), Verify: verifyOf(req.MACKey).String(),
	}}
	var dest target
	var rs *resumeState
	var tree *treeDest
	if req.Tree != nil {
		d, r, err := n.prepareTree(req, rec)
		if err != nil {
			return PrepareResponse{}, err
		}
		dest, rs, tree = d, r, d
	} else if req.DestRegion == nil {
		// A file: resumable unless the source asked not to (resume.go), or
		// sent it whole inline (nothing to resume).
		freq := req
		freq.NoResume = req.NoResume || req.Inline != nil
		d, r, err := n.prepareFile(freq, rec)
		if err != nil {
			return PrepareResponse{}, err
		}
		dest, rs = d, r
	} else {
		release, err := n.quota.take(&n.cfg, req.Client, 0, "", 0) // a region window reserves no disk
		if err != nil {
			return PrepareResponse{}, err
		}
		rec.release = release
		if err := n.admit(rec); err != nil {
			release()
			return PrepareResponse{}, err
		}
		if dest, err = n.openDestination(req); err != nil {
			n.finish(rec, StateFailed, err)
			return PrepareResponse{}, err
		}
	}
	plan := ChunkPlan{Size: req.Size, ChunkSize: req.ChunkSize}
	in := &incoming{rec: rec, node: n, dest: dest, plan: plan, movingT: time.Now(), srcBase: req.SourceOffset, source: req.SourceNode,
		crcs: make([]uint32, plan.Count()), landed: make([]bool, plan.Count()), claimed: make([]bool, plan.Count()), macKey: req.MACKey, resume: rs,
		tree: tree}
	in.markResumed()
	if req.Inline != nil {
		resp := PrepareResponse{Transport: TransportTCP, FinalPath: in.dest.Path()}
		if err := n.startReceiving(req, in, resp); err != nil {
			return PrepareResponse{}, err
		}
		return n.landInline(ctx, in, req, resp)
	}
	resp, err := n.openChannels(req, in)
	if err != nil {
		in.closeChannels()
		n.finish(rec, StateFailed, err)
		in.letGo(!errors.Is(err, ErrInvalid))
		return PrepareResponse{}, err
	}
	if rs != nil {
		resp.Resumed, resp.ResumeNote = rs.present, rs.note
	}
	resp.TreeAccepted = tree != nil
	if err := n.startReceiving(req, in, resp); err != nil {
		return PrepareResponse{}, err
	}
	return resp, nil
}

// validatePrepare checks what a source asks for before anything is created.
func (n *Node) validatePrepare(req PrepareRequest) error {
	switch {
	case !validID(req.ID):
		return fmt.Errorf("%w: transfer id %s (want 1-64 letters, digits or '-')", ErrInvalid, shown(req.ID))
	case req.Size < 0:
		return fmt.Errorf("%w: negative size %d", ErrInvalid, req.Size)
	case req.SourceOffset < 0 || req.SourceOffset > math.MaxInt64-req.Size:
		return fmt.Errorf("%w: source offset %d + size %d does not fit a 64-bit offset", ErrOutOfRange, req.SourceOffset, req.Size)
	case req.ChunkSize < MinChunkSize || req.ChunkSize > MaxChunkSize:
		return fmt.Errorf("%w: chunk size %d outside [%d, %d]", ErrInvalid, req.ChunkSize, MinChunkSize, MaxChunkSize)
	case req.Size/req.ChunkSize > 1<<24:
		return fmt.Errorf("%w: %d bytes in %d-byte chunks is too many chunks; use a larger chunk size", ErrInvalid, req.Size, req.ChunkSize)
	case req.Policy != PolicyRDMA && n.cfg.Data == nil:
		return fmt.Errorf("%w: node %s has no TCP data channel", ErrTransportUnavailable, n.cfg.ID)
	case len(req.SourceNode) > MaxNameLen:
		return fmt.Errorf("%w: source node name of %d bytes exceeds the limit of %d bytes (%s)", ErrInvalid, len(req.SourceNode), MaxNameLen, shown(req.SourceNode))
	}
	// Both reach logs and ListTransfers: no control characters there either.
	if err := checkChars("source node name", req.SourceNode); err != nil {
		return err
	}
	return checkPath("source path", req.SourcePath)
}

// openDestination opens a window of a region as the destination (a file
// is prepareFile's).
func (n *Node) openDestination(req PrepareRequest) (target, error) {
	ref := req.DestRegion
	f, off, _, release, err := n.acquireRegion(*ref, req.Size)
	if err != nil {
		return nil, err
	}
	return &regionTarget{file: f, off: off, ref: RegionRef{ref.Name, off, req.Size}, release: release}, nil
}

// openChannels chooses the transport and sets up the data channels: RDMA
// lanes when both ends can (lanes.go), and TCP unless the policy is RDMA
// (it carries the transfer, or takes over if RDMA breaks).
func (n *Node) openChannels(req PrepareRequest, in *incoming) (PrepareResponse, error) {
	resp := PrepareResponse{Transport: TransportTCP, FinalPath: in.dest.Path()}
	var rdmaReason string
	if req.Policy != PolicyTCP {
		rdmaReason = n.acceptLanes(req, in, &resp)
	}
	if req.Policy == PolicyRDMA && len(in.rdma) == 0 {
		return PrepareResponse{}, fmt.Errorf("%w: %s", ErrTransportUnavailable, rdmaReason)
	}
	if req.Policy != PolicyRDMA {
		tok, err := fallback.NewToken()
		if err != nil {
			return PrepareResponse{}, err
		}
		require := n.requireEncryption(req.Client)
		in.release = n.cfg.Data.ExpectWith(tok, in.sink(), fallback.ExpectOptions{RequireTLS: require})
		resp.TCP = TCPChannel{Addr: n.cfg.DataAddr, Token: tok[:], CertSHA256: certOf(n.cfg.Data), RequireTLS: require}
	}
	if len(in.rdma) == 0 && req.Policy == PolicyAuto {
		resp.FallbackReason = rdmaReason
	}
	return resp, nil
}

// startReceiving makes the prepared transfer live: moving, watched by the
// idle timer, unless it was cancelled meanwhile.
func (n *Node) startReceiving(req PrepareRequest, in *incoming, resp PrepareResponse) error {
	rec := in.rec
	rec.info.Transport, rec.info.FallbackReason = resp.Transport, resp.FallbackReason
	first := n.cfg.FirstByteTimeout
	if first < 0 || (resp.Transport == TransportRDMA && first < n.cfg.IdleTimeout) {
		// Over RDMA the first sign of data is a whole chunk's message (4 MiB
		// WRITEs on a slow link can take longer than the deadline): the idle
		// timeout applies; the per-client quotas still bound what is held.
		first = n.cfg.IdleTimeout
	}
	rec.mu.Lock() // sawData reads in.idle under it
	in.idle = time.AfterFunc(first, func() { n.abortIncoming(rec, StateFailed, in.stalled(), false) })
	cancelled := rec.info.State.Terminal()
	rec.in = in
	rec.info.DestPath = in.dest.Path()
	if !cancelled {
		rec.info.State = StateMoving
	}
	rec.mu.Unlock()
	if cancelled {
		in.idle.Stop()
		in.closeChannels()
		rec.mu.Lock()
		discard := rec.discard
		rec.mu.Unlock()
		in.letGo(!discard)
		return fmt.Errorf("%w while preparing", ErrCanceled)
	}
	n.logger(rec).Info("receiving", "dest", in.dest.Path(), "size", req.Size)
	return nil
}

// closeChannels stops both data channels: afterwards no chunk lands, the
// RDMA slots are deregistered (their rkeys are dead) and the token refused.
func (in *incoming) closeChannels() { in.stopChannels(false) }

// stopChannels is closeChannels; with keep, the clean RDMA lanes are
// detached instead (slots deregistered, queue pairs kept) and returned, to
// be parked once the transfer committed.
func (in *incoming) stopChannels(keep bool) (idle []*rdma.ParkedEndpoint) {
	in.closed.Do(func() {
		idle = in.parkLanes(keep)
		if in.unmap != nil { // the lanes are stopped and the window deregistered: nothing writes the mapping now
			if err := in.unmap(); err != nil {
				in.node.logger(in.rec).Warn("unmapping the RDMA destination", "err", err)
			}
		}
		if in.release != nil {
			in.release()
		}
	})
	return idle
}

// File implements chunk.Sink.
func (in *incoming) File() *os.File { return in.dest.File() }

// sink is what the data channels land chunks in: in itself, or for a tree
// a chunk.ExtentSink.
func (in *incoming) sink() chunk.Sink {
	if in.tree != nil {
		return treeSink{in}
	}
	return in
}

// Admit implements chunk.Sink: a chunk must match the agreed plan
// exactly, so its bytes go to its own range relative to the destination's
// base and nowhere else. It claims the chunk: both transports land chunks
// through here, so one rule covers them — a chunk landing on one connection
// is refused on any other, and a verified chunk is final.
func (in *incoming) Admit(c chunk.Chunk) (int64, error) {
	in.sawData()
	if int(c.Index) >= in.plan.Count() {
		return 0, fmt.Errorf("%w: chunk %d of a %d-chunk transfer", ErrInvalid, c.Index, in.plan.Count())
	}
	off, n := in.plan.Span(int(c.Index))
	if c.Offset != in.srcBase+off || int64(c.Length) != n {
		return 0, fmt.Errorf("%w: chunk %d at %d+%d, want %d+%d", ErrInvalid, c.Index, c.Offset, c.Length, in.srcBase+off, n)
	}
	in.rec.mu.Lock()
	defer in.rec.mu.Unlock()
	switch {
	case in.landed[c.Index]:
		return 0, fmt.Errorf("chunk %d: %w", c.Index, chunk.ErrAlreadyVerified)
	case in.claimed[c.Index]:
		return 0, fmt.Errorf("chunk %d: %w", c.Index, chunk.ErrInFlight)
	}
	in.claimed[c.Index] = true
	return in.dest.Base() + off, nil
}

// Landed implements chunk.Sink: end the chunk's claim, and record it if it
// was verified.
func (in *incoming) Landed(c chunk.Chunk, err error) { in.landedVia(c, err, false) }

func (in *incoming) landedVia(c chunk.Chunk, err error, viaRDMA bool) {
	in.sawData()
	in.rec.mu.Lock()
	defer in.rec.mu.Unlock()
	in.claimed[c.Index] = false
	if err != nil {
		// Its bytes may be in the file, but Commit needs every chunk
		// verified: a resend must land and verify over them first.
		in.node.loggerLocked(in.rec).Warn("chunk failed verification", "chunk", c.Index, "err", err)
		if errors.Is(err, chunk.ErrChecksum) {
			in.node.cfg.Observer.ChunkVerifyFailed()
		}
		return
	}
	if in.rec.info.State != StateMoving || in.landed[c.Index] {
		return
	}
	in.landed[c.Index] = true
	in.crcs[c.Index] = c.CRC
	in.nLanded++
	if in.resume != nil {
		off, _ := in.plan.Span(int(c.Index))
		in.resume.journal.add(JournalRecord{Index: c.Index, Length: c.Length, Offset: off, CRC: c.CRC})
	}
	if viaRDMA {
		in.viaRDMA++
	}
	in.rec.info.BytesDone += int64(c.Length)
	if s := time.Since(in.movingT).Seconds(); s > 0 {
		in.rec.info.Rate = float64(in.rec.info.BytesDone) / s
	}
	in.idle.Reset(in.node.cfg.IdleTimeout)
}

// Commit verifies that every chunk landed and the whole-file CRC32C matches,
// then makes the file durable and visible under its final name.
func (n *Node) Commit(ctx context.Context, req CommitRequest) (CommitResponse, error) {
	rec, err := n.incomingRecord(req.ID)
	if err != nil {
		return CommitResponse{}, err
	}
	rec.mu.Lock()
	in := rec.in
	state, nLanded, viaRDMA := rec.info.State, in.nLanded, in.viaRDMA
	if state == StateMoving {
		rec.info.State = StateVerifying
	}
	rec.mu.Unlock()
	switch {
	case state != StateMoving:
		return CommitResponse{}, fmt.Errorf("%w: transfer %s is %s, not moving", ErrInvalid, req.ID, state)
	case req.Size != in.plan.Size:
		err = fmt.Errorf("%w: commit for %d bytes, prepared for %d", ErrInvalid, req.Size, in.plan.Size)
	case nLanded != in.plan.Count():
		err = fmt.Errorf("%w: %d of %d chunks landed and verified", ErrIncomplete, nLanded, in.plan.Count())
	}
	if err == nil {
		in.idle.Stop()
		// Every chunk came over RDMA: keep the queue pairs for the source's
		// next transfer (parked only if the commit succeeds).
		idle := in.stopChannels(len(in.rdma) > 0 && nLanded > 0 && viaRDMA == nLanded && n.pool.Parking())
		defer func() { closeParked(idle) }()
		got := in.plan.Combine(in.crcs)
		var macChecked bool
		if got != req.CRC32C {
			err = fmt.Errorf("%w: whole-file CRC32C %08x, sender computed %08x", ErrCorrupt, got, req.CRC32C)
		} else if macChecked, err = in.checkMAC(req.MAC); err == nil {
			in.stopJournal(false) // Commit syncs the whole file; the journal goes with it
			err = in.dest.Commit()
		}
		if err == nil {
			rec.mu.Lock()
			rec.info.Result = &Result{CRC32C: got, FinalPath: in.dest.Path(), Duration: time.Since(rec.info.Started)}
			rec.info.FilesDone = rec.info.FilesTotal
			rec.mu.Unlock()
			n.pool.Keep(in.source, idle)
			idle = nil
			n.finish(rec, StateCommitted, nil)
			if in.resume != nil {
				n.releasePartial(in.resume, false, 0)
			}
			n.logger(rec).Info("committed", "path", in.dest.Path(), "crc32c", fmt.Sprintf("%08x", got))
			return CommitResponse{FinalPath: in.dest.Path(), CRC32C: got, MACVerified: macChecked}, nil
		}
	}
	// A file that failed its whole-file check is not kept: its chunks do not add up.
	n.abortIncoming(rec, StateFailed, err, errors.Is(err, ErrCorrupt))
	return CommitResponse{}, err
}

// Abort ends an incoming transfer: its partial file is kept for a resume,
// or with discard removed.
func (n *Node) Abort(ctx context.Context, id, reason string, discard bool) error {
	rec, err := n.incomingRecord(id)
	if err != nil {
		return err
	}
	n.abortIncoming(rec, StateCancelled, fmt.Errorf("%w: aborted by the source: %s", ErrCanceled, reason), discard)
	return nil
}

func (n *Node) incomingRecord(id string) (*record, error) {
	n.mu.Lock()
	rec, ok := n.transfers[key{Incoming, id}]
	n.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: no incoming transfer %s on node %s", ErrNotFound, shown(id), n.cfg.ID)
	}
	return rec, nil
}

// abortIncoming ends an incoming transfer that did not commit: the token is
// released (closing its data connections) and the partial file kept for a
// resume (a resumable one) or removed (discard, or any other).
func (n *Node) abortIncoming(rec *record, st State, cause error, discard bool) {
	if discard {
		rec.mu.Lock()
		rec.discard = true // for Prepare, if it is still running
		rec.mu.Unlock()
	}
	if !n.finish(rec, st, cause) {
		return
	}
	rec.mu.Lock()
	in := rec.in
	rec.mu.Unlock()
	if in == nil { // cancelled while Prepare was still creating it; Prepare cleans up
		return
	}
	in.idle.Stop()
	in.closeChannels()
	in.letGo(!discard)
	lvl := slog.LevelWarn
	if errors.Is(cause, ErrCanceled) {
		lvl = slog.LevelInfo
	}
	n.logger(rec).Log(context.Background(), lvl, "incoming transfer ended", "state", st, "reason", cause)
}
