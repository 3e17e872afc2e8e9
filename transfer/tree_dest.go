package transfer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/chunk"
)

// The destination of a tree: its directories are created at Prepare and
// each regular file lands in a hidden partial file in its directory,
// sized with ftruncate (holes stay holes: only data ranges are written).
// Commit publishes every file under its final name, complete and verified;
// a tree commit is not atomic as a whole (README.md).

// treePartialPrefix starts the names of a tree's partial files and of its
// journal: partial names (partialMarker and hex digits) never have the "t".
const treePartialPrefix = partialMarker + "t"

// treePartialName is the partial name of a tree's file of final name name:
// the same for every copy, so a rerun finds what the last one verified.
func treePartialName(name string) string {
	h := sha256.Sum256([]byte("tree\x00" + name))
	return treePartialPrefix + hex.EncodeToString(h[:8])
}

// treeJournalName is the journal of a tree, in its root directory.
func treeJournalName() string { return treePartialPrefix + "journal" + journalSuffix }

// treeDest is where a tree transfer's bytes go (a target whose File is
// nil: chunks land through extents).
type treeDest struct {
	node      *Node
	m         *TreeManifest
	layout    *treeLayout
	rootPath  string // the tree's root beneath the export root, as users see it
	root      *os.File
	overwrite bool
	asRoot    bool // the node runs as root: owners are kept
	created   []string
	inos      []uint64 // inode of each file's partial (layout order)
	cache     *fileCache
	dirs      dirCache // the tree's directories, for openFile (under the cache's lock)
	journal   string   // the journal's name in root ("" = none)
	once      sync.Once
}

// openBeneath opens rel beneath directory fd following no symbolic link at
// all: the destination's directories are the manifest's, so a link in
// their place (put there by anyone) stops the copy instead of leading it.
func openBeneath(fd int, rel string, flags uint64, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Mode: uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	for {
		fd, err := unix.Openat2(fd, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// dirCache holds the tree's directories open while Prepare and Commit walk
// the manifest (bounded: it is emptied when full).
type dirCache struct {
	root int
	fds  map[string]int
}

func (c *dirCache) get(rel string) (int, error) {
	if rel == "." {
		return c.root, nil
	}
	if fd, ok := c.fds[rel]; ok {
		return fd, nil
	}
	if len(c.fds) >= treeOpenFiles {
		c.close()
	}
	fd, err := openBeneath(c.root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, err
	}
	if c.fds == nil {
		c.fds = make(map[string]int)
	}
	c.fds[rel] = fd
	return fd, nil
}

func (c *dirCache) close() {
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	clear(c.fds)
}

// resolveTreeRoot finds the tree's root beneath the export root, cp -r's
// way: destPath itself when contents (SRC/) or when it does not exist,
// destPath/sourceName when it is a directory. It returns the root's path and
// whether it exists (then it is a directory the tree merges into).
func (r *Root) resolveTreeRoot(destPath, sourceName string, contents bool) (string, bool, error) {
	if err := checkPath("destination path", destPath); err != nil {
		return "", false, err
	}
	isDir := func(p string) (bool, error) {
		fd, err := r.openatFD(p, unix.O_PATH|unix.O_NOFOLLOW, 0)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("destination %w", err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return false, osErr(err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return false, fmt.Errorf("%w: destination %s exists and is not a directory", ErrExists, shown(p))
		}
		return true, nil
	}
	root := path.Join("/", destPath)
	exists, err := isDir(root)
	if err != nil {
		return "", false, err
	}
	if !contents && exists {
		if err := checkTreeName(sourceName, false); err != nil || strings.Contains(sourceName, "/") {
			return "", false, fmt.Errorf("%w: source directory name %s cannot be created in %s", ErrInvalid, shown(sourceName), shown(root))
		}
		root = path.Join(root, sourceName)
		if exists, err = isDir(root); err != nil {
			return "", false, err
		}
	}
	if strings.Contains(path.Base(root), partialMarker) {
		return "", false, fmt.Errorf("%w: destination name %s contains %q, which only rxfer's partial files may", ErrInvalid, shown(root), partialMarker)
	}
	return root, exists, nil
}

// checkTreeConflicts refuses, before anything is created, a tree whose
// entries collide with what the existing root holds: a directory where the
// manifest has something else or the other way round, and (without
// overwrite) any existing file or link, naming it.
func checkTreeConflicts(rootFD int, rootPath string, m *TreeManifest, overwrite bool) error {
	dirs := dirCache{root: rootFD}
	defer dirs.close()
	missing := make(map[string]bool) // directories that do not exist yet: nothing below them does
	for _, e := range m.Entries[1:] {
		parent := path.Dir(e.Path)
		if missing[parent] {
			if e.Kind == TreeDir {
				missing[e.Path] = true
			}
			continue
		}
		pfd, err := dirs.get(parent)
		if err != nil {
			return fmt.Errorf("destination directory %s: %w", shown(path.Join(rootPath, parent)), osErr(err))
		}
		var st unix.Stat_t
		err = unix.Fstatat(pfd, path.Base(e.Path), &st, unix.AT_SYMLINK_NOFOLLOW)
		final := path.Join(rootPath, e.Path)
		switch {
		case err == unix.ENOENT:
			if e.Kind == TreeDir {
				missing[e.Path] = true
			}
		case err != nil:
			return fmt.Errorf("destination %s: %w", shown(final), osErr(err))
		case e.Kind == TreeDir && st.Mode&unix.S_IFMT != unix.S_IFDIR:
			return fmt.Errorf("%w: destination %s exists and is not a directory", ErrExists, shown(final))
		case e.Kind != TreeDir && st.Mode&unix.S_IFMT == unix.S_IFDIR:
			return fmt.Errorf("%w: destination %s is a directory; the source's is a %s", ErrExists, shown(final), e.Kind)
		case e.Kind != TreeDir && !overwrite:
			return fmt.Errorf("%w: destination %s exists (use overwrite / --force to replace it)", ErrExists, shown(final))
		}
	}
	return nil
}

// createTree creates the tree's root (when it does not exist) and
// directories, and a partial file for each regular file: resume keeps the
// partial files there are (a resumed copy's chunks are in them), otherwise
// each is created afresh. On failure what it created is removed.
func (n *Node) createTree(rootPath string, exists bool, m *TreeManifest, overwrite, resume bool) (d *treeDest, err error) {
	d = &treeDest{node: n, m: m, layout: newTreeLayout(m), rootPath: rootPath, overwrite: overwrite, asRoot: os.Geteuid() == 0}
	if !exists {
		pfd, err := n.cfg.Root.openatFD(path.Dir(rootPath), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return nil, fmt.Errorf("destination directory %w", err)
		}
		err = unix.Mkdirat(pfd, path.Base(rootPath), 0o755)
		unix.Close(pfd)
		if err != nil && err != unix.EEXIST {
			return nil, fmt.Errorf("creating %s: %w", shown(rootPath), osErr(err))
		}
		if err == nil {
			d.created = append(d.created, ".")
		}
	}
	d.root, err = n.cfg.Root.openat(rootPath, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		if len(d.created) > 0 {
			n.cfg.Root.removeDir(rootPath)
		}
		return nil, fmt.Errorf("destination %w", err)
	}
	made := d // an error return sets d to nil: remove what was made
	defer func() {
		if err != nil {
			made.Remove()
		}
	}()
	if !resume {
		// Files are created as their chunks land: what would fail them
		// for want of space or inodes fails here, before a byte moves.
		err := checkInodes(int(d.root.Fd()), len(m.Entries))
		if err == nil && !exists { // an existing root's space was checked with its conflicts
			err = checkFree(int(d.root.Fd()), d.layout.size)
		}
		if err != nil {
			return nil, err
		}
	}
	dirs := dirCache{root: int(d.root.Fd())}
	defer dirs.close()
	d.inos = make([]uint64, len(d.layout.files))
	fi := 0
	for _, e := range m.Entries[1:] {
		pfd, err := dirs.get(path.Dir(e.Path))
		if err != nil {
			return nil, fmt.Errorf("destination directory %s: %w", shown(path.Join(rootPath, path.Dir(e.Path))), osErr(err))
		}
		name := path.Base(e.Path)
		switch e.Kind {
		case TreeDir:
			switch err := unix.Mkdirat(pfd, name, 0o755); {
			case err == nil:
				d.created = append(d.created, e.Path)
			case err != unix.EEXIST:
				return nil, fmt.Errorf("creating directory %s: %w", shown(path.Join(rootPath, e.Path)), osErr(err))
			}
		case TreeFile:
			// A fresh copy creates a file holding data bytes when its first
			// chunk lands (openFile): Prepare stays short, and a file costs
			// one open instead of two. Files without data bytes, and every
			// file of a resumed copy, are created (or found) here.
			if !resume && len(e.ranges()) > 0 {
				fi++
				continue
			}
			ino, err := createPartial(pfd, treePartialName(name), e, resume)
			if err != nil {
				return nil, fmt.Errorf("creating the partial file of %s: %w", shown(path.Join(rootPath, e.Path)), osErr(err))
			}
			d.inos[fi] = ino
			fi++
		}
	}
	d.dirs = dirCache{root: int(d.root.Fd())}
	d.cache = newFileCache(d.openFile, treeOpenFiles)
	d.cache.onClose = d.dirs.close
	return d, nil
}

// checkInodes refuses a tree of n entries (each may need an inode, and the
// journal one more) on a file system of fd with fewer free inodes; one
// that does not count them (Files 0) passes.
func checkInodes(fd, n int) error {
	var fs unix.Statfs_t
	if unix.Fstatfs(fd, &fs) == nil && fs.Files > 0 && uint64(n) > fs.Ffree {
		return fmt.Errorf("%w: the tree's %d entries need as many inodes, %d are free", ErrNoSpace, n, fs.Ffree)
	}
	return nil
}

// createPartial creates partial in directory pfd for file e, sized to
// e.Size, and returns its inode; with resume, a partial of our own already
// there is kept (its verified chunks are what the copy resumes).
func createPartial(pfd int, partial string, e TreeEntry, resume bool) (uint64, error) {
	fd := -1
	var err error
	if resume {
		fd, err = unix.Openat(pfd, partial, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		var st unix.Stat_t
		if err == nil && (unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1) {
			unix.Close(fd) // not a file of our own: replaced below
			fd = -1
		}
	}
	if fd < 0 {
		if fd, err = createExcl(pfd, partial); err != nil {
			return 0, err
		}
	}
	defer unix.Close(fd)
	return sizePartial(fd, e)
}

// createExcl creates partial in pfd, O_EXCL: a file of our own, never one
// someone linked there; a stale one goes first (tried only then: one
// syscall less a file for a fresh tree).
func createExcl(pfd int, partial string) (int, error) {
	const create = unix.O_RDWR | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(pfd, partial, create, 0o644)
	if err == unix.EEXIST {
		unix.Unlinkat(pfd, partial, 0)
		fd, err = unix.Openat(pfd, partial, create, 0o644)
	}
	return fd, err
}

// sizePartial gives fd e's size (a sparse file's holes stay holes) and
// returns its inode. A dense file reaches its size as its bytes land, so
// a fresh one needs no ftruncate.
func sizePartial(fd int, e TreeEntry) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	fresh := e.Data == nil && st.Size == 0 // its bytes will make its size
	if st.Size != e.Size && !fresh {
		if err := unix.Ftruncate(fd, e.Size); err != nil {
			return 0, err
		}
	}
	return st.Ino, nil
}

// openFile opens layout file i's partial file for the cache (it holds the
// cache's lock), creating it when its first chunk lands.
func (d *treeDest) openFile(i int) (*os.File, error) {
	e := d.m.Entries[d.layout.files[i]]
	dir, name := path.Dir(e.Path), treePartialName(path.Base(e.Path))
	fail := func(err error) (*os.File, error) {
		return nil, fmt.Errorf("partial file of %s: %w", shown(path.Join(d.rootPath, e.Path)), osErr(err))
	}
	pfd, err := d.dirs.get(dir)
	if err != nil {
		return fail(err)
	}
	var fd int
	if d.inos[i] == 0 {
		if fd, err = createExcl(pfd, name); err == nil {
			d.inos[i], err = sizePartial(fd, e)
			if err != nil {
				unix.Close(fd)
			}
		}
	} else {
		fd, err = unix.Openat(pfd, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return fail(err)
	}
	return os.NewFile(uintptr(fd), path.Join(dir, name)), nil
}

// fileName is the final path of layout file i, for errors.
func (d *treeDest) fileName(i int) string {
	return path.Join(d.rootPath, d.m.Entries[d.layout.files[i]].Path)
}

// File implements target: a tree has no one file (chunk.ExtentSink).
func (d *treeDest) File() *os.File { return nil }

// Base implements target.
func (d *treeDest) Base() int64 { return 0 }

// Path is the tree's root as users see it.
func (d *treeDest) Path() string { return d.rootPath }

// Commit makes the tree durable and visible: every file's metadata on its
// partial, syncfs (all data and metadata at once, instead of an fsync per
// file), symbolic links created, each partial renamed to its final name
// (checked first to still be the file written), directories' metadata last
// and deepest first (a rename changes its directory's mtime; a read-only
// mode would stop the renames), then one fsync of each directory.
func (d *treeDest) Commit() error {
	d.cache.close()
	rfd := int(d.root.Fd())
	dirs := dirCache{root: rfd}
	defer dirs.close()
	// Each file's directory is opened first (one walk, cached); then the
	// per-file work, a few syscalls each, runs on every CPU: for 10,000
	// small files it was a third of the copy, one core busy and one idle.
	type item struct {
		e   TreeEntry
		pfd int
		ino uint64 // a regular file's inode, as created
	}
	var items []item
	fi := 0
	for _, e := range d.m.Entries[1:] {
		if e.Kind == TreeDir {
			continue
		}
		pfd, err := dirs.get(path.Dir(e.Path))
		if err != nil {
			return d.fail(e, "opening its directory", err)
		}
		it := item{e: e, pfd: pfd}
		if e.Kind == TreeFile {
			it.ino = d.inos[fi]
			fi++
		}
		items = append(items, it)
	}
	err := parallelEach(len(items), func(i int) error {
		it := items[i]
		if it.e.Kind != TreeFile {
			return nil
		}
		partial := treePartialName(path.Base(it.e.Path))
		var st unix.Stat_t
		if err := unix.Fstatat(it.pfd, partial, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Ino != it.ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return fmt.Errorf("%w: the partial file of %s is not the file received; nothing more was published", ErrCorrupt, shown(path.Join(d.rootPath, it.e.Path)))
		}
		if err := d.applyMeta(it.pfd, partial, it.e, 0, &st); err != nil {
			return d.fail(it.e, "setting its metadata", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := unix.Syncfs(rfd); err != nil {
		return fmt.Errorf("syncfs under %s: %w", shown(d.rootPath), osErr(err))
	}
	flags := uint(unix.RENAME_NOREPLACE)
	if d.overwrite {
		flags = 0
	}
	err = parallelEach(len(items), func(i int) error {
		e, pfd := items[i].e, items[i].pfd
		name := path.Base(e.Path)
		partial := treePartialName(name)
		if e.Kind == TreeSymlink {
			unix.Unlinkat(pfd, partial, 0)
			if err := unix.Symlinkat(e.Target, pfd, partial); err != nil {
				return d.fail(e, "creating the link", err)
			}
			if err := d.applyMeta(pfd, partial, e, unix.AT_SYMLINK_NOFOLLOW, nil); err != nil {
				return d.fail(e, "setting its metadata", err)
			}
		}
		if err := unix.Renameat2(pfd, partial, pfd, name, flags); err != nil {
			return d.fail(e, "renaming it into place", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if d.journal != "" { // every file is in place: nothing to resume (before the root's mtime is set)
		unix.Unlinkat(rfd, d.journal, 0)
	}
	dirList := []TreeEntry{}
	for _, e := range d.m.Entries {
		if e.Kind == TreeDir {
			dirList = append(dirList, e)
		}
	}
	slices.Reverse(dirList) // children come after parents in a manifest: deepest first
	for _, e := range dirList {
		pfd, err := dirs.get(path.Dir(e.Path))
		if err != nil {
			return d.fail(e, "opening its directory", err)
		}
		name := path.Base(e.Path)
		if e.Path == "." {
			pfd, name = rfd, "."
		}
		if err := d.applyMeta(pfd, name, e, unix.AT_SYMLINK_NOFOLLOW, nil); err != nil {
			return d.fail(e, "setting its metadata", err)
		}
	}
	for _, e := range dirList {
		fd, err := dirs.get(e.Path)
		if err == nil {
			err = unix.Fsync(fd)
		}
		if err != nil {
			return d.fail(e, "fsync", err)
		}
	}
	if slices.Contains(d.created, ".") { // the root's own name is new
		if err := d.syncParent(); err != nil {
			return err
		}
	}
	d.created = nil
	d.root.Close()
	return nil
}

func (d *treeDest) syncParent() error {
	pfd, err := d.node.cfg.Root.openatFD(path.Dir(d.rootPath), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err == nil {
		err = unix.Fsync(pfd)
		unix.Close(pfd)
	}
	if err != nil {
		return fmt.Errorf("fsync the directory of %s: %w", shown(d.rootPath), osErr(err))
	}
	return nil
}

// fail names the entry a commit step failed on.
func (d *treeDest) fail(e TreeEntry, what string, err error) error {
	return fmt.Errorf("committing %s %s (%s): %w", e.Kind, shown(path.Join(d.rootPath, e.Path)), what, osErr(err))
}

// applyMeta gives name in pfd e's owner (as root), mode and mtime, or,
// unless the manifest says Preserve, leaves it as created. With st (name's
// stat), an owner or mode it already has is not set again: for a tree of
// small files that is two syscalls a file.
func (d *treeDest) applyMeta(pfd int, name string, e TreeEntry, flags int, st *unix.Stat_t) error {
	if !d.m.Preserve {
		return nil
	}
	chowned := false
	if d.asRoot && (st == nil || st.Uid != e.UID || st.Gid != e.GID) {
		if err := unix.Fchownat(pfd, name, int(e.UID), int(e.GID), flags|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		chowned = true // it may have cleared set-user/group-ID bits
	}
	if e.Kind != TreeSymlink && (st == nil || chowned || st.Mode&0o7777 != e.Mode) { // a link's mode means nothing on Linux
		if err := unix.Fchmodat(pfd, name, e.Mode, 0); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(e.MtimeNs), unix.NsecToTimespec(e.MtimeNs)}
	return unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// Remove deletes the tree's partial files and journal and the directories
// this copy created (if empty), and releases the descriptors.
func (d *treeDest) Remove() { d.release(false) }

// Keep releases the descriptors, leaving the partial files and the
// journal for a resume.
func (d *treeDest) Keep() { d.release(true) }

func (d *treeDest) release(keep bool) {
	d.once.Do(func() {
		if d.cache != nil {
			d.cache.close()
		}
		if d.root == nil {
			return
		}
		if !keep {
			rfd := int(d.root.Fd())
			dirs := dirCache{root: rfd}
			for _, e := range d.m.Entries[1:] {
				if e.Kind == TreeDir {
					continue
				}
				if pfd, err := dirs.get(path.Dir(e.Path)); err == nil {
					unix.Unlinkat(pfd, treePartialName(path.Base(e.Path)), 0)
				}
			}
			if d.journal != "" {
				unix.Unlinkat(rfd, d.journal, 0)
			}
			for _, rel := range slices.Backward(d.created) {
				if rel == "." {
					continue
				}
				if pfd, err := dirs.get(path.Dir(rel)); err == nil {
					unix.Unlinkat(pfd, path.Base(rel), unix.AT_REMOVEDIR) // ENOTEMPTY: someone else's file is in it
				}
			}
			dirs.close()
			if slices.Contains(d.created, ".") {
				d.node.cfg.Root.removeDir(d.rootPath)
			}
		}
		d.root.Close()
	})
}

// removeDir removes the empty directory p beneath the root.
func (r *Root) removeDir(p string) {
	if pfd, err := r.openatFD(path.Dir(p), unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
		unix.Unlinkat(pfd, path.Base(p), unix.AT_REMOVEDIR)
		unix.Close(pfd)
	}
}

// extents returns where chunk c's bytes go, its files pinned until
// released.
func (d *treeDest) extents(c chunk.Chunk, off int64) ([]chunk.Extent, error) {
	return d.cache.extents(d.layout, c.Index, off, int64(c.Length))
}

// parallelEach runs f(0) ... f(n-1) on up to GOMAXPROCS goroutines, each
// taking a contiguous run, and returns the first error (the others stop at
// their next item).
func parallelEach(n int, f func(i int) error) error {
	workers := min(runtime.GOMAXPROCS(0), 8, max(1, n/256)) // a few hundred items a goroutine at least
	if workers <= 1 {
		for i := range n {
			if err := f(i); err != nil {
				return err
			}
		}
		return nil
	}
	var failed atomic.Bool
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := n*w/workers, n*(w+1)/workers
		wg.Go(func() {
			for i := lo; i < hi && !failed.Load(); i++ {
				if err := f(i); err != nil {
					errs[w] = err
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
