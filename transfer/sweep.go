package transfer

import (
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The sweep of partial files: kept partial files expire after
// Config.PartialTTL. At start-up a node walks its export root once, removes
// what expired, partial files without a journal (a daemon killed during a
// copy that did not resume, or an rxfer from before resume) and journals
// without a partial file, and counts what it keeps against its client's
// reservation; afterwards it expires the partial files it keeps
// periodically. Every removal is logged.

// sweeper is a node's periodic sweep.
type sweeper struct {
	once sync.Once
	stop chan struct{}
	done chan struct{}
}

// partialTTL is the node's effective time to keep a partial file.
func (n *Node) partialTTL() time.Duration {
	if n.cfg.PartialTTL == 0 {
		return DefaultPartialTTL
	}
	return n.cfg.PartialTTL
}

// StartSweeper sweeps the export root now (see above) and then expires
// kept partial files every sweepEvery until Shutdown. Call it once, before
// serving: the partial files it finds are resumable from then on.
func (n *Node) StartSweeper() {
	n.SweepRoot(time.Now())
	every := min(max(n.partialTTL()/4, time.Second), 10*time.Minute)
	s := &sweeper{stop: make(chan struct{}), done: make(chan struct{})}
	n.mu.Lock()
	n.sweep = s
	n.mu.Unlock()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				n.ExpirePartials(now)
			case <-s.stop:
				return
			}
		}
	}()
}

func (n *Node) stopSweeper() {
	n.mu.Lock()
	s := n.sweep
	n.mu.Unlock()
	if s != nil {
		s.once.Do(func() { close(s.stop); <-s.done })
	}
}

// SweepRoot walks the export root for partial files (see above) as of now.
func (n *Node) SweepRoot(now time.Time) {
	start := time.Now()
	var removed, kept int
	filepath.WalkDir(n.cfg.Root.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // unreadable: skipped (its partial files stay until readable)
		}
		rel, err := filepath.Rel(n.cfg.Root.Dir(), p)
		if err != nil {
			return nil
		}
		r, k := n.sweepDir(path.Join("/", filepath.ToSlash(rel)), now)
		removed, kept = removed+r, kept+k
		return nil
	})
	n.log.Info("partial files swept", "root", n.cfg.Root.Dir(), "removed", removed, "kept", kept, "ttl", n.partialTTL(),
		"took", time.Since(start).Round(time.Millisecond))
}

// sweepDir sweeps one directory beneath the root at start-up.
func (n *Node) sweepDir(dirPath string, now time.Time) (removed, kept int) {
	dir, err := n.cfg.Root.openat(dirPath, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return 0, 0
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return 0, 0
	}
	var st unix.Stat_t
	if unix.Fstat(int(dir.Fd()), &st) != nil {
		return 0, 0
	}
	dfd := int(dir.Fd())
	have := make(map[string]bool)
	for _, name := range names {
		if strings.HasPrefix(name, partialMarker) {
			have[name] = true
		}
	}
	unlink := func(name, why string) {
		if unix.Unlinkat(dfd, name, 0) == nil {
			n.log.Info("removed partial file", "path", path.Join(dirPath, name), "why", why)
			removed++
		}
	}
	for name := range have {
		if strings.HasPrefix(name, treePartialPrefix) {
			// A tree's partial file or journal: its journal is in the
			// tree's root, so it is kept until the TTL after its last write.
			var pst unix.Stat_t
			if unix.Fstatat(dfd, name, &pst, unix.AT_SYMLINK_NOFOLLOW) != nil {
				continue
			}
			mod := time.Unix(pst.Mtim.Unix())
			if ttl := n.partialTTL(); ttl > 0 && now.Sub(mod) > ttl {
				unlink(name, "a directory tree's partial file expired (serve --partial-ttl "+ttl.String()+")")
			} else if name == treeJournalName() && n.keepTree(dfd, dirPath, mod) {
				kept++
			}
			continue
		}
		if base, isJournal := strings.CutSuffix(name, journalSuffix); isJournal {
			if !have[base] {
				unlink(name, "a journal without its partial file")
			}
			continue
		}
		journal := name + journalSuffix
		if !have[journal] {
			unlink(name, "a partial file without a journal cannot be resumed")
			continue
		}
		h, recs, err := readJournal(dfd, journal)
		var jst unix.Stat_t
		switch {
		case err != nil:
			unlink(name, "its journal is unusable: "+err.Error())
			unlink(journal, "its journal is unusable")
			continue
		case unix.Fstatat(dfd, journal, &jst, unix.AT_SYMLINK_NOFOLLOW) != nil:
			continue
		}
		mod := time.Unix(jst.Mtim.Unix())
		if ttl := n.partialTTL(); ttl > 0 && now.Sub(mod) > ttl {
			unlink(name, "expired (serve --partial-ttl "+ttl.String()+")")
			unlink(journal, "expired")
			continue
		}
		var verified int64
		for _, r := range recs {
			verified += int64(r.Length)
		}
		e := &partialEntry{key: partialKeyOf(st, name), dirPath: dirPath, partial: name, finalPath: path.Join(dirPath, h.FinalName),
			kept: true, host: h.Client, size: h.Source.Size, verified: verified, id: h.ID,
			source: h.Source.Node + ":" + h.Source.Path, modTime: mod}
		n.mu.Lock()
		if n.partials[e.key] == nil {
			n.partials[e.key] = e
			n.quota.keep(e.host, e.size)
			kept++
		}
		n.mu.Unlock()
	}
	return removed, kept
}

// keepTree registers the kept tree whose journal is in directory dfd (at
// dirPath), so that status lists it, cancel --discard removes it and its
// bytes count against its client, as a kept file's do.
func (n *Node) keepTree(dfd int, dirPath string, mod time.Time) bool {
	h, recs, err := readJournal(dfd, treeJournalName())
	if err != nil {
		return false // a rerun starts over and rewrites it; the TTL removes it otherwise
	}
	var verified int64
	for _, r := range recs {
		verified += int64(r.Length)
	}
	e := &partialEntry{key: "tree:" + dirPath, dirPath: dirPath, partial: treePartialPrefix + "journal", finalPath: dirPath,
		kept: true, host: h.Client, size: h.Source.Size, verified: verified, id: h.ID,
		source: h.Source.Node + ":" + h.Source.Path, modTime: mod}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.partials[e.key] != nil {
		return false
	}
	n.partials[e.key] = e
	n.quota.keep(e.host, e.size)
	return true
}

// partialKeyOf names partial file name in the directory of stat dir
// across the node: the directory's device and inode, and the name.
func partialKeyOf(dir unix.Stat_t, name string) string {
	return fmt.Sprintf("%d:%d/%s", dir.Dev, dir.Ino, name)
}

// ExpirePartials removes the kept partial files whose last write is older
// than the TTL as of now.
func (n *Node) ExpirePartials(now time.Time) {
	ttl := n.partialTTL()
	if ttl <= 0 {
		return
	}
	n.mu.Lock()
	var expired []*partialEntry
	for k, e := range n.partials {
		if e.active == nil && e.kept && now.Sub(e.modTime) > ttl {
			expired = append(expired, e)
			delete(n.partials, k)
		}
	}
	n.mu.Unlock()
	for _, e := range expired {
		n.removePartial(e, "expired (serve --partial-ttl "+ttl.String()+")")
	}
}

// removePartial deletes a partial file and its journal that no transfer
// holds any more (the caller took it out of n.partials) and gives back its
// reservation.
func (n *Node) removePartial(e *partialEntry, why string) {
	if e.kept {
		n.quota.unkeep(e.host, e.size)
	}
	dir, err := n.cfg.Root.openat(e.dirPath, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		n.log.Warn("partial file not removed", "path", path.Join(e.dirPath, e.partial), "err", err)
		return
	}
	defer dir.Close()
	if e.partial == treePartialPrefix+"journal" {
		removed := n.removeTreePartials(int(dir.Fd()), e.dirPath)
		unix.Unlinkat(int(dir.Fd()), treeJournalName(), 0)
		n.log.Info("removed a tree's partial files", "root", e.dirPath, "files", removed, "why", why)
		return
	}
	unix.Unlinkat(int(dir.Fd()), e.partial, 0)
	unix.Unlinkat(int(dir.Fd()), e.partial+journalSuffix, 0)
	dir.Sync()
	n.log.Info("removed partial file", "path", path.Join(e.dirPath, e.partial), "dest", e.finalPath, "why", why)
}

// removeTreePartials unlinks the partial files of the tree kept at
// rootPath (open as fd): without its manifest, every regular file named
// like one beneath it, following no link and skipping the roots of other
// trees being copied or kept there. It returns how many it removed.
func (n *Node) removeTreePartials(fd int, rootPath string) int {
	others := make(map[string]bool)
	n.mu.Lock()
	for k := range n.partials {
		if p, ok := strings.CutPrefix(k, "tree:"); ok && p != rootPath {
			others[p] = true
		}
	}
	n.mu.Unlock()
	removed := 0
	var walk func(fd int, dirPath string)
	walk = func(fd int, dirPath string) {
		names, err := readDirNames(fd)
		if err != nil {
			return
		}
		for _, name := range names {
			if strings.HasPrefix(name, treePartialPrefix) {
				var st unix.Stat_t
				if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG &&
					unix.Unlinkat(fd, name, 0) == nil {
					removed++
				}
				continue
			}
			child := path.Join(dirPath, name)
			if others[child] {
				continue
			}
			cfd, err := openBeneath(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
			if err != nil {
				continue // not a directory (or a link to one)
			}
			walk(cfd, child)
			unix.Fsync(cfd)
			unix.Close(cfd)
		}
	}
	walk(fd, rootPath)
	unix.Fsync(fd)
	return removed
}

// keptInfo describes the kept partial file of transfer id.
func (n *Node) keptInfo(id string) (Info, bool) {
	for _, i := range n.keptInfos(nil) {
		if i.ID == id {
			return i, true
		}
	}
	return Info{}, false
}

// keptInfos describes the kept partial files, except those of a transfer
// in listed (whose own entry says Resumable).
func (n *Node) keptInfos(listed []Info) []Info {
	skip := make(map[string]bool)
	for _, i := range listed {
		if i.Direction == Incoming {
			skip[i.ID] = true
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Info
	for _, e := range n.partials {
		if e.active != nil || !e.kept || skip[e.id] {
			continue
		}
		out = append(out, Info{ID: e.id, State: StateFailed, Direction: Incoming, SourcePath: e.source, DestNode: n.cfg.ID,
			DestPath: e.finalPath, BytesDone: e.verified, BytesTotal: e.size, Started: e.modTime, Resumable: true,
			Err: "partial file kept for a resume until " + e.modTime.Add(n.partialTTL()).Format(time.RFC3339)})
	}
	return out
}

// discardKeptID removes the kept partial file of transfer id, if any.
func (n *Node) discardKeptID(id string) {
	n.mu.Lock()
	var found *partialEntry
	for k, e := range n.partials {
		if e.id == id && e.active == nil && e.kept {
			found = e
			delete(n.partials, k)
			break
		}
	}
	n.mu.Unlock()
	if found != nil {
		n.removePartial(found, "discarded by request (cancel --discard)")
	}
}
