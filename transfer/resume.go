package transfer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/internal/crc32c"
)

// Resume: a copy into a file writes a named partial file and its chunk
// journal (journal.go). When it fails (or a daemon dies) both stay, and the
// next copy of the same source to the same destination re-reads and
// re-checks every journaled chunk and offers those that are intact: the
// source sends only the rest. Region destinations do not resume.
//
// A resumable partial file is named, unlike the unnamed (O_TMPFILE) one of
// a copy that does not resume: its bytes must outlive the daemon. Its name
// contains the partial marker, so no transfer can be prepared to it, and
// Commit publishes it only after checking that the name still holds the
// inode this node wrote (Destination.samePartial). A verified chunk stays
// final: a resumed chunk is verified again from disk before it is offered
// and then refused like any other verified chunk.

// maxResumeChunks bounds the chunks a destination offers (each is 8 bytes
// of the Prepare answer, under gRPC's 4 MiB message limit) and the chunks
// of a transfer that can resume.
const maxResumeChunks = 1 << 18

// DefaultPartialTTL is how long a failed transfer's partial file is kept
// for a resume.
const DefaultPartialTTL = 24 * time.Hour

// ErrSourceChanged: the source is not what a partial file holds bytes of.
// The service layer maps it to Aborted: copying again starts over.
var ErrSourceChanged = errors.New("source changed")

// ResumedChunk is a chunk the destination already holds, verified.
type ResumedChunk struct {
	Index uint32
	CRC   uint32
}

// resumableName is the resumable partial file's name for final name name:
// the same for every copy to that name, so a later copy finds it.
func resumableName(name string) string {
	h := sha256.Sum256([]byte("resume\x00" + name))
	return partialMarker + hex.EncodeToString(h[:8])
}

// partialEntry is one resumable partial file this node knows: being
// written by a transfer (active), or kept for a resume (its reservation
// then still counts against its client, clientQuota). n.mu guards it.
type partialEntry struct {
	key       string // directory dev:ino and partial name
	dirPath   string // the directory beneath the root
	partial   string // the partial file's name
	finalPath string
	active    *record // the transfer writing it (nil: kept)
	kept      bool    // its size counts against host's reservation
	host      string
	size      int64
	verified  int64 // bytes journaled, as of the last transfer or scan
	id        string
	source    string
	modTime   time.Time
}

// resumeState is an incoming transfer's resume bookkeeping.
type resumeState struct {
	entry    *partialEntry
	identity SourceIdentity
	journal  *journalWriter
	present  []ResumedChunk
	resumed  int64
	note     string
	stopOnce sync.Once
	rec      *record // the transfer resuming, for its log lines
}

// identity is the source identity a Prepare names.
func (req PrepareRequest) identity() SourceIdentity {
	return SourceIdentity{Node: req.SourceNode, Path: req.SourcePath, Size: req.Size,
		MtimeNs: req.SourceMtimeNs, Inode: req.SourceInode, Generation: req.SourceGeneration}
}

// partialKey names d's resumable partial file across the node: its
// directory's device and inode, and its name.
func (d *Destination) partialKey() (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.dir.Fd()), &st); err != nil {
		return "", fmt.Errorf("destination directory of %s: %w", shown(d.FinalPath), osErr(err))
	}
	return partialKeyOf(st, d.partial), nil
}

// prepareFile sets up a file destination: a resumable named partial file
// with its journal (resuming what a journal offers), or with NoResume an
// unnamed partial file as before (a kept partial of that name is
// discarded). It takes the client's quota and admits rec.
func (n *Node) prepareFile(req PrepareRequest, rec *record) (*Destination, *resumeState, error) {
	d, err := n.cfg.Root.resolveDestination(req.DestPath, req.SourceName, req.Overwrite)
	if err != nil {
		return nil, nil, err
	}
	d.partial = resumableName(d.name)
	key, err := d.partialKey()
	if err != nil {
		d.dir.Close()
		return nil, nil, err
	}
	if req.NoResume {
		n.discardKept(key)
		release, err := n.quota.take(&n.cfg, req.Client, req.Size, "", 0)
		if err == nil {
			rec.release = release
			if err = n.admit(rec); err != nil {
				release()
			}
		}
		if err != nil {
			d.dir.Close()
			return nil, nil, err
		}
		d.partial = partialName(d.name, req.ID)
		if err := d.create(req.Size, knobs.namedPartial); err != nil {
			n.finish(rec, StateFailed, err)
			return nil, nil, err
		}
		return d, nil, nil
	}
	ident := req.identity()
	e, err := n.claimPartial(key, rec, ident)
	if err != nil {
		d.dir.Close()
		return nil, nil, err
	}
	e.dirPath, e.partial, e.finalPath = d.DirPath, d.partial, d.FinalPath
	if err := n.reserveOver(e, rec, req); err != nil {
		n.mu.Lock()
		e.active = nil
		if !e.kept {
			delete(n.partials, key)
		}
		n.mu.Unlock()
		d.dir.Close()
		return nil, nil, err
	}
	n.mu.Lock()
	e.kept, e.host, e.size, e.id, e.source = false, clientHost(req.Client), req.Size, req.ID, req.SourceNode+":"+req.SourcePath
	n.mu.Unlock()
	rs := &resumeState{entry: e, identity: ident, rec: rec}
	if kept, err := n.openResumable(d, req, rs); err != nil {
		n.finish(rec, StateFailed, err)
		n.releasePartial(rs, kept, rs.resumed)
		return nil, nil, err
	}
	return d, rs, nil
}

// claimPartial makes rec the writer of partial file key. A transfer of the
// same source still writing it (its source died, say, and the source's
// next attempt is here) is superseded: it ends, its partial file and journal
// kept. Any other writer makes this ErrBusy.
func (n *Node) claimPartial(key string, rec *record, ident SourceIdentity) (*partialEntry, error) {
	for range 3 {
		n.mu.Lock()
		e := n.partials[key]
		if e == nil {
			e = &partialEntry{key: key}
			n.partials[key] = e
		}
		old := e.active
		if old == nil {
			e.active = rec
			n.mu.Unlock()
			return e, nil
		}
		n.mu.Unlock()
		old.mu.Lock()
		oin, st, oid := old.in, old.info.State, old.info.ID
		old.mu.Unlock()
		if oin == nil || oin.resume == nil || st != StateMoving || oin.resume.identity.differs(ident) != "" {
			return nil, fmt.Errorf("%w: transfer %s is writing this destination; wait for it or cancel it", ErrBusy, oid)
		}
		n.abortIncoming(old, StateFailed, fmt.Errorf("%w: superseded by transfer %s of the same source, which resumes it", ErrCanceled, rec.info.ID), false)
	}
	return nil, fmt.Errorf("%w: another transfer is writing this destination", ErrBusy)
}

// reserveOver takes req's reservation from its client's quota, the kept
// partial e's (if any) passing to it, and admits rec.
func (n *Node) reserveOver(e *partialEntry, rec *record, req PrepareRequest) error {
	n.mu.Lock()
	creditHost, credit := e.host, int64(0)
	if e.kept {
		credit = e.size
	}
	n.mu.Unlock()
	release, err := n.quota.take(&n.cfg, req.Client, req.Size, creditHost, credit)
	if err != nil {
		return err
	}
	rec.release = release
	if err := n.admit(rec); err != nil {
		release()
		return err
	}
	return nil
}

// releasePartial ends rec's claim on its partial file: kept for a resume
// (its reservation counted against host until then), or forgotten.
func (n *Node) releasePartial(rs *resumeState, keep bool, verified int64) {
	e := rs.entry
	n.mu.Lock()
	defer n.mu.Unlock()
	e.active = nil
	if !keep {
		if n.partials[e.key] == e {
			delete(n.partials, e.key)
		}
		return
	}
	e.kept, e.verified, e.modTime = true, verified, time.Now()
	n.quota.keep(e.host, e.size)
}

// discardKept removes the kept partial file key, if it is not being written.
func (n *Node) discardKept(key string) {
	n.mu.Lock()
	e := n.partials[key]
	if e == nil || e.active != nil {
		n.mu.Unlock()
		return
	}
	delete(n.partials, key)
	n.mu.Unlock()
	n.removePartial(e, "a copy that does not resume replaces it")
}

// openResumable opens the partial file of d (or creates it), resumes what
// its journal offers when the source is the same, and starts journaling.
// On failure d is released; kept says whether its files stay (a resume that
// found no room for the rest keeps the verified chunks).
func (n *Node) openResumable(d *Destination, req PrepareRequest, rs *resumeState) (kept bool, err error) {
	dfd := int(d.dir.Fd())
	d.journal = d.partial + journalSuffix
	d.named = true
	plan := ChunkPlan{Size: req.Size, ChunkSize: req.ChunkSize}
	f, note := n.reopenPartial(d, plan, rs)
	if f == nil {
		if note != "" {
			n.logger(rs.rec).Info("starting over", "dest", d.FinalPath, "why", note)
		}
		rs.note, rs.present, rs.resumed = note, nil, 0
		unix.Unlinkat(dfd, d.partial, 0)
		fd, err := unix.Openat(dfd, d.partial, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
		if err != nil {
			d.dir.Close()
			return false, fmt.Errorf("creating the partial file of %s: %w", shown(d.FinalPath), osErr(err))
		}
		f = os.NewFile(uintptr(fd), d.partial)
	}
	d.file = f
	if req.Size > 0 {
		if err := reserve(int(f.Fd()), req.Size); err != nil {
			err = fmt.Errorf("preallocating %d bytes for %s: %w", req.Size, shown(d.FinalPath), osErr(err))
			if rs.resumed > 0 {
				d.Keep() // the verified chunks stay, and so does their journal
				return true, err
			}
			d.Remove()
			return false, err
		}
	}
	// A fresh journal: the header for this transfer and a record for every
	// chunk offered.
	jf, seed, err := createJournal(d.dir, d.journal, JournalHeader{ChunkSize: plan.ChunkSize, Source: rs.identity, FinalName: d.name, Client: clientHost(req.Client), ID: req.ID}, plan, rs.present)
	if err != nil {
		d.Remove()
		return false, fmt.Errorf("creating the chunk journal of %s: %w", shown(d.FinalPath), osErr(err))
	}
	rs.journal = newJournalWriter(f, jf, seed, n.logger(rs.rec))
	return false, nil
}

// reopenPartial opens an existing partial file of d and returns it with the
// chunks it offers in rs, or nil and why it starts over ("" when there was
// nothing to resume).
func (n *Node) reopenPartial(d *Destination, plan ChunkPlan, rs *resumeState) (*os.File, string) {
	dfd := int(d.dir.Fd())
	fd, err := unix.Openat(dfd, d.partial, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	switch {
	case err == unix.ENOENT:
		return nil, ""
	case err != nil:
		return nil, fmt.Sprintf("the partial file could not be opened (%v)", err)
	}
	f := os.NewFile(uintptr(fd), d.partial)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		// Not a file of our own (another type, or linked elsewhere too):
		// never write through it; its name is replaced.
		f.Close()
		return nil, "the partial file's name held something else"
	}
	unix.SetNonblock(fd, false)
	h, recs, err := readJournal(dfd, d.journal)
	why := ""
	switch {
	case err != nil:
		why = fmt.Sprintf("the partial file's journal is unusable (%v)", err)
	case h.FinalName != d.name:
		why = "the partial file belongs to another name"
	case rs.identity.differs(h.Source) != "":
		why = "source changed: " + rs.identity.differs(h.Source)
	case plan.Count() > maxResumeChunks:
		why = fmt.Sprintf("%d chunks are more than a resume offers (%d); use a larger chunk size", plan.Count(), maxResumeChunks)
	case st.Size < h.Source.Size:
		why = "the partial file is shorter than the source"
	}
	if why != "" {
		f.Close()
		return nil, why
	}
	start := time.Now()
	present, bad, err := recheck(f, recs, plan)
	if err != nil {
		f.Close()
		return nil, fmt.Sprintf("the partial file could not be read back (%v)", err)
	}
	rs.present = present
	for _, c := range present {
		_, l := plan.Span(int(c.Index))
		rs.resumed += l
	}
	n.logger(rs.rec).Info("resuming", "dest", d.FinalPath, "chunks", len(present), "of", plan.Count(), "bytes", rs.resumed,
		"failed_recheck", bad, "recheck", time.Since(start).Round(time.Millisecond))
	if bad > 0 {
		rs.note = fmt.Sprintf("%d journaled chunks failed their CRC32C check on disk and are sent again", bad)
	}
	return f, ""
}

// readJournal reads and parses the journal name in directory dfd, opened
// without following a link or blocking, and only if it is a regular file
// no larger than a journal can be.
func readJournal(dfd int, name string) (JournalHeader, []JournalRecord, error) {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return JournalHeader{}, nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	const maxJournal = journalFixed + 2*MaxNameLen + MaxPathLen + MaxNameLen + maxJournalID + 4 + (1<<24+1)*journalRecLen
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > maxJournal {
		return JournalHeader{}, nil, errors.New("not a regular file of a journal's size")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxJournal))
	if err != nil {
		return JournalHeader{}, nil, err
	}
	return ParseJournal(b)
}

// recheck reads every journaled chunk back from f, checks its
// CRC32C and returns the chunks of plan (the new transfer's; its chunk
// size may differ) whose every byte lies in intact journaled chunks, with
// their CRC32C computed in the same pass; bad counts the journaled chunks
// that failed.
func recheck(f *os.File, recs []JournalRecord, plan ChunkPlan) (present []ResumedChunk, bad int, err error) {
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b JournalRecord) int { return int(a.Index) - int(b.Index) })
	count := plan.Count()
	sums := make([]uint32, count)
	next := make([]int64, count) // where chunk j's bytes continue; -1: a gap or a failed chunk
	for j := range count {
		next[j], _ = plan.Span(j)
	}
	buf := make([]byte, 1<<20)
	for _, r := range recs {
		var sum uint32
		for at := r.Offset; at < r.Offset+int64(r.Length); {
			k, rerr := f.ReadAt(buf[:min(r.Offset+int64(r.Length)-at, int64(len(buf)))], at)
			if k == 0 && rerr != nil {
				return nil, 0, rerr
			}
			sum = crc32c.Update(sum, buf[:k])
			// Feed the bytes to the new plan's chunks they belong to.
			for p, e := at, at+int64(k); p < e; {
				j := int(p / plan.ChunkSize)
				_, jl := plan.Span(j)
				end := min(e, int64(j)*plan.ChunkSize+jl)
				if next[j] == p {
					sums[j] = crc32c.Update(sums[j], buf[p-at:end-at])
					next[j] = end
				} else {
					next[j] = -1
				}
				p = end
			}
			at += int64(k)
		}
		if sum != r.CRC {
			bad++
			for p := r.Offset; p < r.Offset+int64(r.Length); {
				j := int(p / plan.ChunkSize)
				next[j] = -1
				p = (int64(j) + 1) * plan.ChunkSize
			}
		}
	}
	for j := range count {
		if off, l := plan.Span(j); next[j] == off+l {
			present = append(present, ResumedChunk{Index: uint32(j), CRC: sums[j]})
		}
	}
	return present, bad, nil
}

// markResumed counts the chunks the destination resumes as landed and
// verified: final, like every verified chunk.
func (in *incoming) markResumed() {
	if in.resume == nil {
		return
	}
	for _, c := range in.resume.present {
		in.landed[c.Index], in.crcs[c.Index] = true, c.CRC
		in.nLanded++
	}
	in.rec.info.BytesDone = in.resume.resumed
	in.rec.info.ResumedBytes = in.resume.resumed
	in.rec.info.ResumeNote = in.resume.note
}

// stopJournal stops journaling (once); with flush, what is pending is
// journaled first.
func (in *incoming) stopJournal(flush bool) {
	if in.resume == nil {
		return
	}
	in.resume.stopOnce.Do(func() { in.resume.journal.close(flush) })
}

// letGo lets go of the destination of a transfer that did not commit,
// after its channels were closed: a resumable partial file with verified
// chunks is kept with its journal (keep), anything else removed.
func (in *incoming) letGo(keep bool) {
	rs := in.resume
	d, named := in.dest.(interface{ Keep() })
	if rs == nil || !named {
		in.dest.Remove()
		return
	}
	in.stopJournal(keep)
	in.rec.mu.Lock()
	verified := int64(0)
	for i, ok := range in.landed {
		if ok {
			_, l := in.plan.Span(i)
			verified += l
		}
	}
	// With no verified chunk there is nothing to resume: a peer that
	// prepares and sends nothing leaves nothing behind.
	keep = keep && verified > 0
	in.rec.info.Resumable = keep
	in.rec.mu.Unlock()
	if keep {
		d.Keep()
	} else {
		in.dest.Remove()
	}
	in.node.releasePartial(rs, keep, verified)
}

// checkResumed validates the chunks a destination says it holds: each
// inside the plan, once. The source checks each one's CRC32C against its
// own bytes before counting it (scheduler.feed).
func (p *push) checkResumed(chunks []ResumedChunk) (map[uint32]uint32, error) {
	if len(chunks) == 0 {
		return nil, nil
	}
	if len(chunks) > min(p.plan.Count(), maxResumeChunks) {
		return nil, fmt.Errorf("%w: destination offers %d chunks of a %d-chunk transfer", ErrInvalid, len(chunks), p.plan.Count())
	}
	out := make(map[uint32]uint32, len(chunks))
	for _, c := range chunks {
		if int64(c.Index) >= int64(p.plan.Count()) {
			return nil, fmt.Errorf("%w: destination offers chunk %d of a %d-chunk transfer", ErrInvalid, c.Index, p.plan.Count())
		}
		if _, dup := out[c.Index]; dup {
			return nil, fmt.Errorf("%w: destination offers chunk %d twice", ErrInvalid, c.Index)
		}
		out[c.Index] = c.CRC
	}
	return out, nil
}

// regionGeneration is a region's generation for a resume: its
// registration time, new each time the name is registered again.
func (n *Node) regionGeneration(name string) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r := n.regions[name]; r != nil {
		return uint64(r.info.Created.UnixNano())
	}
	return 0
}

// createJournal creates a fresh journal named name in dir: the header h and
// a record for every chunk already present, durable (the file, then dir)
// before it returns. The name is unlinked first so that O_EXCL creates a
// file of our own (never truncating a file someone linked there).
func createJournal(dir *os.File, name string, h JournalHeader, plan ChunkPlan, present []ResumedChunk) (*os.File, uint32, error) {
	dfd := int(dir.Fd())
	unix.Unlinkat(dfd, name, 0)
	jfd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, 0, err
	}
	jf := os.NewFile(uintptr(jfd), name)
	b, seed := AppendJournalHeader(nil, h)
	for _, c := range present {
		off, l := plan.Span(int(c.Index))
		b = AppendJournalRecord(b, seed, JournalRecord{Index: c.Index, Length: uint32(l), Offset: off, CRC: c.CRC})
	}
	if _, err = jf.Write(b); err == nil {
		err = unix.Fdatasync(jfd)
	}
	if err == nil {
		err = dir.Sync()
	}
	if err != nil {
		jf.Close()
		return nil, 0, err
	}
	return jf, seed, nil
}
