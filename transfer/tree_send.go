package transfer

import (
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
)

// treeSource is the sending side of a tree: its manifest, and its files
// opened on demand for the chunks that read them (chunk.Layout).
type treeSource struct {
	root     *Root
	base     string // the tree's root beneath the export root
	m        *TreeManifest
	layout   *treeLayout
	warnings []string
	cache    *fileCache
	dirs     dirCache // the tree's directories, for openFile (under the cache's lock)

	mu        sync.Mutex
	left      []int // chunks not yet verified that hold bytes of each layout file
	filesDone int64
	bufs      sync.Pool
	// held are chunks of small files read for their CRC32C, kept until
	// sent: their bytes leave in one write from memory instead of a
	// sendfile a file, and each file is read once. heldBytes bounds them.
	held      map[uint32][]byte
	heldBytes int64
}

// A chunk whose extents average less than treeSmallExtent is held (read
// once, sent from memory) while at most treeHeldMax bytes are: sendfile
// costs more than the copy for a few KiB, and big files stay zero-copy.
const (
	treeSmallExtent = 64 << 10
	treeHeldMax     = 16 << 20
)

// openTree walks the tree at p for a push.
func (n *Node) openTree(p string) (*treeSource, error) {
	m, warnings, err := n.cfg.Root.WalkTree(p, n.treeLimits())
	if err != nil {
		return nil, err
	}
	t, err := newTreeSource(n.cfg.Root, p, m)
	if err != nil {
		return nil, err
	}
	t.warnings = warnings
	return t, nil
}

// newTreeSource reads the files of manifest m, walked at base beneath root.
func newTreeSource(root *Root, base string, m *TreeManifest) (*treeSource, error) {
	fd, err := root.openatFD(base, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("source %w", err)
	}
	t := &treeSource{root: root, base: base, m: m, layout: newTreeLayout(m), dirs: dirCache{root: fd}}
	t.cache = newFileCache(t.openFile, sourceOpenFiles())
	t.cache.onClose = func() {
		t.dirs.close()
		unix.Close(fd)
	}
	return t, nil
}

// sourceOpenFiles is how many unpinned files a tree's source keeps open. A
// chunk's CRC reads its files some chunks before its send does: with 128
// open, a chunk of 2,000 small files was opened twice, a quarter of the
// source's CPU for 10,000 files of 4 KiB; 4,096 (at most a quarter of the
// descriptor limit) keeps them open from one pass to the other.
func sourceOpenFiles() int {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil {
		return treeOpenFiles
	}
	return int(max(treeOpenFiles, min(4096, lim.Cur/4)))
}

// openFile opens layout file i (a regular file, not followed through a
// link) from its directory, which is opened following no link at all: the
// walk found a directory there, and a link put in its place during the
// copy stops it. It holds the cache's lock.
func (t *treeSource) openFile(i int) (*os.File, error) {
	e := t.m.Entries[t.layout.files[i]]
	dir, name := path.Dir(e.Path), path.Base(e.Path)
	changed := func(what string, err error) (*os.File, error) {
		return nil, fmt.Errorf("%w: source file %s %s during the copy: %w", ErrSourceChanged, shown(e.Path), what, osErr(err))
	}
	pfd, err := t.dirs.get(dir)
	if err != nil {
		return changed("is no longer reachable", err)
	}
	// O_NONBLOCK: a FIFO put in the file's place must not block the open.
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return changed("cannot be opened", err)
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	switch {
	case err != nil:
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("it is now %s", fileType(st.Mode))
	case st.Size < e.Size:
		err = fmt.Errorf("it shrank from %d to %d bytes", e.Size, st.Size)
	default:
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0) // clears O_NONBLOCK (no other status flag was set)
	}
	if err != nil {
		unix.Close(fd)
		return changed("changed", err)
	}
	return os.NewFile(uintptr(fd), path.Join(t.base, e.Path)), nil
}

// Extents implements chunk.Layout: the bytes of a held chunk, else its
// files' extents, open until release.
func (t *treeSource) Extents(c chunk.Chunk) ([]chunk.Extent, error) {
	t.mu.Lock()
	b, ok := t.held[c.Index]
	t.mu.Unlock()
	if ok && len(b) == int(c.Length) {
		t.cache.pinNone(c.Index)
		return []chunk.Extent{{Data: b, Length: int64(len(b))}}, nil
	}
	return t.cache.extents(t.layout, c.Index, c.Offset, int64(c.Length))
}

// release ends a send of chunk idx: its files are unpinned and its held
// bytes dropped (a resend reads the files again).
func (t *treeSource) release(idx uint32) {
	t.drop(idx)
	t.cache.release(idx)
}

func (t *treeSource) drop(idx uint32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b, ok := t.held[idx]; ok {
		t.heldBytes -= int64(len(b))
		delete(t.held, idx)
	}
}

// hold reserves n bytes for chunk i's held copy if its extents are small
// files and the bound allows.
func (t *treeSource) hold(ext []chunk.Extent, n int64) bool {
	if len(ext) < 2 || n/int64(len(ext)) >= treeSmallExtent {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.heldBytes+n > treeHeldMax {
		return false
	}
	t.heldBytes += n
	return true
}

// crc reads stream bytes [off, off+n), chunk i, and returns their CRC32C,
// keeping them when hold says so.
func (t *treeSource) crc(i int, off, n int64) (uint32, error) {
	ext, err := t.cache.extents(t.layout, uint32(i), off, n)
	if err != nil {
		return 0, err
	}
	defer t.cache.release(uint32(i))
	if t.hold(ext, n) {
		b := make([]byte, n)
		fill := int64(0)
		for _, e := range ext {
			if k, err := e.File.ReadAt(b[fill:fill+e.Length], e.Offset); int64(k) < e.Length {
				t.mu.Lock()
				t.heldBytes -= n
				t.mu.Unlock()
				return 0, shortSource(e, err)
			}
			fill += e.Length
		}
		t.mu.Lock()
		if t.held == nil {
			t.held = make(map[uint32][]byte)
		}
		t.held[uint32(i)] = b
		t.mu.Unlock()
		return crc32c.Checksum(b), nil
	}
	bp, _ := t.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 1<<20)
		bp = &b
	}
	defer t.bufs.Put(bp)
	buf := *bp
	var sum uint32
	for _, e := range ext {
		for at := e.Offset; at < e.Offset+e.Length; {
			k, err := e.File.ReadAt(buf[:min(int64(len(buf)), e.Offset+e.Length-at)], at)
			if k == 0 {
				return 0, shortSource(e, err)
			}
			sum = crc32c.Update(sum, buf[:k])
			at += int64(k)
		}
	}
	return sum, nil
}

// treeSmallChunk is the chunk size of a tree of small files over TCP: a
// chunk of 8 MiB holds 2,000 files of 4 KiB, so a tree of 10,000 had five,
// too few to keep four streams busy, and the first reached the destination
// only after 2,000 files were read.
const treeSmallChunk = 1 << 20

// chunkSize is the chunk size for the tree given the node's: smaller for a
// tree whose files average less than treeSmallExtent. It depends on the
// manifest alone, so a rerun resumes with the same chunks.
func (t *treeSource) chunkSize(def int64) int64 {
	if n := len(t.layout.files); n > 0 && t.layout.size/int64(n) < treeSmallExtent {
		return min(def, treeSmallChunk)
	}
	return def
}

// spansChunks reports whether a file of the tree has more data bytes than
// a chunk of size cs (so consecutive chunks may write the same file).
func (t *treeSource) spansChunks(cs int64) bool {
	file, sum := -1, int64(0)
	for _, s := range t.layout.segs { // a file's segments are consecutive
		if s.file != file {
			file, sum = s.file, 0
		}
		if sum += s.n; sum > cs {
			return true
		}
	}
	return false
}

// shortSource is the error of a read of e that came short.
func shortSource(e chunk.Extent, err error) error {
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: reading source file %s: %v", ErrSourceChanged, shown(e.File.Name()), err)
}

// startProgress counts, for each file, the chunks holding its bytes; files
// without data bytes are done from the start.
func (t *treeSource) startProgress(plan ChunkPlan) {
	t.left = make([]int, len(t.layout.files))
	for i := range plan.Count() {
		off, n := plan.Span(i)
		for _, f := range t.layout.filesIn(off, n) {
			t.left[f]++
		}
	}
	for _, l := range t.left {
		if l == 0 {
			t.filesDone++
		}
	}
}

// verified counts chunk i as verified and returns the files done and the
// last file it completed ("" if none).
func (t *treeSource) verified(plan ChunkPlan, i int) (int64, string) {
	off, n := plan.Span(i)
	files := t.layout.filesIn(off, n)
	t.drop(uint32(i)) // a resumed chunk's CRC read it, and no send will
	t.mu.Lock()
	defer t.mu.Unlock()
	last := ""
	for _, f := range files {
		if t.left[f]--; t.left[f] == 0 {
			t.filesDone++
			last = t.m.Entries[t.layout.files[f]].Path
		}
	}
	return t.filesDone, last
}

// filesTotal is what a tree's progress counts: regular files and links.
func (t *treeSource) filesTotal() int64 {
	var n int64
	for _, e := range t.m.Entries {
		if e.Kind != TreeDir {
			n++
		}
	}
	return n
}

// describe names the files of stream bytes [off, off+n), for an error
// about the chunk holding them.
func (t *treeSource) describe(off, n int64) string {
	var names []string
	for _, f := range t.layout.filesIn(off, n) {
		if len(names) == 3 {
			names = append(names, "...")
			break
		}
		names = append(names, shown(t.m.Entries[t.layout.files[f]].Path))
	}
	if len(names) == 0 {
		return ""
	}
	return " (file " + strings.Join(names, ", ") + ")"
}

func (t *treeSource) close() { t.cache.close() }

// isDir reports whether p beneath the root is a directory.
func (r *Root) isDir(p string) bool {
	fd, err := r.openatFD(p, unix.O_PATH, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// treeName is the name a tree's root gets inside an existing destination
// directory: the source directory's base name.
func treeName(p string) string {
	switch b := path.Base(path.Join("/", p)); b {
	case "/", ".":
		return ""
	default:
		return b
	}
}
