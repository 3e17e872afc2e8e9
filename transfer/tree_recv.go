package transfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
)

// maxPendingTrees bounds the manifests a node assembles at once from
// batches; treeBatchTimeout drops one whose next batch does not come.
const (
	maxPendingTrees  = 16
	treeBatchTimeout = time.Minute
)

// treeBatches is a manifest arriving in batches: the first batch's request
// fixes everything but the entries.
type treeBatches struct {
	req     PrepareRequest
	entries []TreeEntry
	bytes   int64
	last    time.Time
	next    int // the batch number expected next
}

// gatherTree takes one batch of a tree's manifest. It returns the whole
// request once the last batch came (done), or nothing while more are
// expected. Every batch is counted against the limits before it is kept,
// and the pending manifests are bounded in number and age.
func (n *Node) gatherTree(req PrepareRequest) (PrepareRequest, bool, error) {
	limits := n.treeLimits()
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	for id, b := range n.trees {
		if now.Sub(b.last) > treeBatchTimeout {
			delete(n.trees, id)
		}
	}
	b := n.trees[req.ID]
	if b != nil && req.TreeBatch == 0 {
		delete(n.trees, req.ID) // the source started over (it redialed)
		b = nil
	}
	if b == nil && req.TreeBatch != 0 {
		return PrepareRequest{}, false, fmt.Errorf("%w: batch %d of tree %s, whose earlier batches did not come (or expired after %v)", ErrInvalid, req.TreeBatch, shown(req.ID), treeBatchTimeout)
	}
	if b == nil {
		if !req.TreeMore {
			return req, true, nil // the whole manifest in one Prepare
		}
		if len(n.trees) >= maxPendingTrees {
			return PrepareRequest{}, false, fmt.Errorf("%w: node %s is receiving %d tree manifests already (limit %d); retry later", ErrTooMany, n.cfg.ID, len(n.trees), maxPendingTrees)
		}
		b = &treeBatches{req: req}
		b.req.Tree = &TreeManifest{Preserve: req.Tree.Preserve}
		if n.trees == nil {
			n.trees = make(map[string]*treeBatches)
		}
		n.trees[req.ID] = b
	} else if req.TreeBatch != b.next {
		delete(n.trees, req.ID)
		return PrepareRequest{}, false, fmt.Errorf("%w: batch %d of tree %s, expected batch %d", ErrInvalid, req.TreeBatch, shown(req.ID), b.next)
	} else if req.SourceNode != b.req.SourceNode || req.DestPath != b.req.DestPath || req.Size != b.req.Size || req.ChunkSize != b.req.ChunkSize || req.Client != b.req.Client {
		delete(n.trees, req.ID)
		return PrepareRequest{}, false, fmt.Errorf("%w: a batch of tree %s differs from its first batch", ErrInvalid, shown(req.ID))
	}
	bytes, err := limits.checkLimits(len(b.entries), b.bytes, req.Tree.Entries)
	if err != nil {
		delete(n.trees, req.ID)
		return PrepareRequest{}, false, err
	}
	b.entries = append(b.entries, req.Tree.Entries...)
	b.bytes, b.last = bytes, now
	b.next++
	if req.TreeMore {
		return PrepareRequest{}, false, nil
	}
	delete(n.trees, req.ID)
	out := b.req
	out.Tree.Entries = b.entries
	out.RDMA, out.RDMAUnavailable, out.TreeMore = req.RDMA, req.RDMAUnavailable, false // the last batch carries the lanes
	return out, true, nil
}

// validateTreePrepare checks what a tree's Prepare asks for beyond a file's.
func (n *Node) validateTreePrepare(req PrepareRequest) error {
	switch {
	case req.DestRegion != nil:
		return fmt.Errorf("%w: a directory tree cannot be copied into a region", ErrInvalid)
	case req.MACKey != nil:
		return fmt.Errorf("%w: --verify mac does not combine with directory trees (each chunk is CRC32C-verified)", ErrInvalid)
	case req.SourceOffset != 0:
		return fmt.Errorf("%w: a tree's stream starts at 0, not %d", ErrInvalid, req.SourceOffset)
	}
	total, err := ValidateTree(req.Tree, n.treeLimits())
	if err != nil {
		return err
	}
	if total != req.Size {
		return fmt.Errorf("%w: the manifest's files hold %d bytes, the Prepare says %d", ErrInvalid, total, req.Size)
	}
	return nil
}

// prepareTree sets up a tree's destination: the whole manifest validated,
// the root resolved the cp -r way, conflicts refused, free space checked,
// then directories and partial files created, a rerun of the same tree
// resuming what its journal holds.
func (n *Node) prepareTree(req PrepareRequest, rec *record) (*treeDest, *resumeState, error) {
	if err := n.validateTreePrepare(req); err != nil {
		return nil, nil, err
	}
	root := n.cfg.Root
	rootPath, exists, err := root.resolveTreeRoot(req.DestPath, req.SourceName, req.TreeContents)
	if err != nil {
		return nil, nil, err
	}
	if exists {
		fd, err := root.openatFD(rootPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("destination %w", err)
		}
		err = checkTreeConflicts(fd, rootPath, req.Tree, req.Overwrite)
		if err == nil {
			err = checkFree(fd, req.Size)
		}
		unix.Close(fd)
		if err != nil {
			return nil, nil, err
		}
	}
	hash := TreeHash(req.Tree, req.ChunkSize)
	ident := SourceIdentity{Node: req.SourceNode, Path: req.SourcePath, Size: req.Size, Generation: binary.LittleEndian.Uint64(hash[:8])}
	rs := &resumeState{identity: ident, rec: rec}
	e, err := n.claimPartial("tree:"+rootPath, rec, ident)
	if err != nil {
		return nil, nil, err
	}
	rs.entry = e
	e.dirPath, e.partial, e.finalPath = rootPath, treePartialPrefix+"journal", rootPath
	// A kept tree's reservation passes to the copy that takes it over (it
	// was counted twice, and the kept one never given back).
	if err := n.reserveOver(e, rec, req); err != nil {
		n.releasePartial(rs, false, 0)
		return nil, nil, err
	}
	n.mu.Lock()
	e.kept, e.host, e.size, e.id, e.source = false, clientHost(req.Client), req.Size, req.ID, req.SourceNode+":"+req.SourcePath
	n.mu.Unlock()
	fail := func(err error) (*treeDest, *resumeState, error) {
		n.finish(rec, StateFailed, err)
		n.releasePartial(rs, false, 0)
		return nil, nil, err
	}
	var old []JournalRecord
	if exists && !req.NoResume {
		old, rs.note = n.treeJournal(rootPath, req, ident)
	}
	d, err := n.createTree(rootPath, exists, req.Tree, req.Overwrite, len(old) > 0)
	if err != nil {
		return fail(err)
	}
	if len(old) > 0 {
		n.recheckTree(d, old, ChunkPlan{Size: req.Size, ChunkSize: req.ChunkSize}, rs)
	}
	if req.NoResume {
		rs = nil
		n.releasePartial(&resumeState{entry: e}, false, 0)
	} else if err := n.startTreeJournal(d, req, rs); err != nil {
		d.Remove()
		return fail(err)
	}
	rec.info.FilesTotal, rec.info.Tree = int64(len(req.Tree.Entries)-countKind(req.Tree, TreeDir)), true
	return d, rs, nil
}

func countKind(m *TreeManifest, k TreeKind) int {
	c := 0
	for _, e := range m.Entries {
		if e.Kind == k {
			c++
		}
	}
	return c
}

// checkFree refuses a tree that cannot fit the file system of fd.
func checkFree(fd int, size int64) error {
	var fs unix.Statfs_t
	if unix.Fstatfs(fd, &fs) == nil && fs.Blocks > 0 && uint64(size) > fs.Bavail*uint64(fs.Bsize) {
		return fmt.Errorf("%w: the tree's files need %d bytes, %d are free", ErrNoSpace, size, fs.Bavail*uint64(fs.Bsize))
	}
	return nil
}

// treeJournal reads the journal a partial copy to rootPath left, and
// returns its records if it was written for the same tree, or why the copy
// starts over.
func (n *Node) treeJournal(rootPath string, req PrepareRequest, ident SourceIdentity) ([]JournalRecord, string) {
	fd, err := n.cfg.Root.openatFD(rootPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, ""
	}
	defer unix.Close(fd)
	h, recs, err := readJournal(fd, treeJournalName())
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, ""
	case err != nil:
		return nil, fmt.Sprintf("the tree's journal is unusable (%v); starting over", err)
	case h.Source.Node != ident.Node || h.Source.Path != ident.Path:
		return nil, fmt.Sprintf("the partial tree holds %s:%s, not %s:%s; starting over", shown(h.Source.Node), shown(h.Source.Path), shown(ident.Node), shown(ident.Path))
	case h.Source != ident || h.ChunkSize != req.ChunkSize:
		return nil, "source tree changed since the partial copy (its manifest differs: a file, size, mtime or link); starting over"
	}
	return recs, ""
}

// recheckTree reads back every journaled chunk of the tree and offers
// those whose CRC32C still matches.
func (n *Node) recheckTree(d *treeDest, recs []JournalRecord, plan ChunkPlan, rs *resumeState) {
	bad := 0
	buf := make([]byte, plan.ChunkSize)
	seen := make(map[uint32]bool)
	for _, r := range recs {
		off, l := plan.Span(int(r.Index))
		if int(r.Index) >= plan.Count() || r.Offset != off || int64(r.Length) != l || seen[r.Index] {
			bad++
			continue
		}
		ext, err := d.extents(chunk.Chunk{Index: r.Index, Length: r.Length}, off)
		if err != nil {
			bad++
			continue
		}
		b := buf[:0]
		for _, e := range ext {
			k, _ := e.File.ReadAt(buf[len(b):len(b)+int(e.Length)], e.Offset)
			b = buf[:len(b)+k]
		}
		d.cache.release(r.Index)
		if int64(len(b)) != l || crc32c.Checksum(b) != r.CRC {
			bad++
			continue
		}
		seen[r.Index] = true
		rs.present = append(rs.present, ResumedChunk{Index: r.Index, CRC: r.CRC})
		rs.resumed += l
	}
	slices.SortFunc(rs.present, func(a, b ResumedChunk) int { return int(a.Index) - int(b.Index) })
	if bad > 0 {
		rs.note = fmt.Sprintf("%d journaled chunks failed their CRC32C check on disk and are sent again", bad)
	}
	n.logger(rs.rec).Info("resuming tree", "dest", d.rootPath, "chunks", len(rs.present), "of", plan.Count(), "bytes", rs.resumed, "failed_recheck", bad)
}

// startTreeJournal writes the tree's journal afresh (a header and a record
// for each chunk offered) and starts journaling; its group commits make
// the data durable with syncfs.
func (n *Node) startTreeJournal(d *treeDest, req PrepareRequest, rs *resumeState) error {
	d.journal = treeJournalName()
	plan := ChunkPlan{Size: req.Size, ChunkSize: req.ChunkSize}
	jf, seed, err := createJournal(d.root, d.journal, JournalHeader{ChunkSize: req.ChunkSize, Source: rs.identity, FinalName: path.Base(d.rootPath), Client: clientHost(req.Client), ID: req.ID}, plan, rs.present)
	if err != nil {
		return fmt.Errorf("creating the chunk journal of %s: %w", shown(d.rootPath), osErr(err))
	}
	rs.journal = newJournalWriter(d.root, jf, seed, n.logger(rs.rec))
	rs.journal.syncfs = true
	return nil
}

// treeSink is the chunk.ExtentSink of an incoming tree.
type treeSink struct{ *incoming }

// AdmitExtents implements chunk.ExtentSink: Admit's checks and claim, then
// the extents of the chunk's bytes, pinned open until Landed.
func (s treeSink) AdmitExtents(c chunk.Chunk) ([]chunk.Extent, error) {
	off, err := s.Admit(c)
	if err != nil {
		return nil, err
	}
	ext, err := s.tree.extents(c, off)
	if err != nil {
		s.rec.mu.Lock()
		s.claimed[c.Index] = false // no Landed follows a refused chunk
		s.rec.mu.Unlock()
		// A file that cannot be created or opened (no space or inodes
		// left, a failing disk) is the destination's I/O: the source says
		// so, naming the chunk's files, instead of "rejected".
		if errors.Is(err, errFilesClosed) {
			return nil, fmt.Errorf("%w: %w", chunk.ErrRejected, err)
		}
		return nil, fmt.Errorf("%w: %w", chunk.ErrReceiverIO, err)
	}
	return ext, nil
}

// Landed implements chunk.Sink, then unpins the chunk's files.
func (s treeSink) Landed(c chunk.Chunk, err error) {
	s.incoming.Landed(c, err)
	s.tree.cache.release(c.Index)
}

// landedVia is for RDMA lanes.
func (s treeSink) landedVia(c chunk.Chunk, err error, viaRDMA bool) {
	s.incoming.landedVia(c, err, viaRDMA)
	s.tree.cache.release(c.Index)
}
