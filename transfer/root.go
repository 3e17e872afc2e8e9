package transfer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Root is a node's export root: every path a peer or client names is
// resolved beneath it. "/" in a request path is the root itself. Resolution
// uses openat2(2) with RESOLVE_BENEATH, so "..", absolute symlinks and
// symlinks that lead out of the root are refused by the kernel, also when
// they race with the check.
type Root struct {
	dir  string
	file *os.File // O_PATH descriptor of the root directory
}

// OpenRoot opens dir as an export root. The directory must exist.
func OpenRoot(dir string) (*Root, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("export root %q: %w", dir, osErr(err))
	}
	return &Root{dir: dir, file: os.NewFile(uintptr(fd), dir)}, nil
}

// Dir is the root's path on this host.
func (r *Root) Dir() string { return r.dir }

// Close releases the root's descriptor.
func (r *Root) Close() error { return r.file.Close() }

// relative turns a request path into one relative to the root. It does not
// clean ".." away: the kernel refuses it if it climbs out.
func relative(p string) (string, error) {
	if err := checkPath("requested path", p); err != nil {
		return "", err
	}
	rel := strings.TrimLeft(p, "/")
	if rel == "" {
		rel = "."
	}
	return rel, nil
}

// openat opens rel beneath the root.
func (r *Root) openat(p string, flags uint64, mode uint32) (*os.File, error) {
	fd, err := r.openatFD(p, flags, mode)
	if err != nil {
		return nil, err
	}
	rel, _ := relative(p)
	return os.NewFile(uintptr(fd), path.Join(r.dir, rel)), nil
}

// openatFD is openat returning the bare descriptor.
func (r *Root) openatFD(p string, flags uint64, mode uint32) (int, error) {
	rel, err := relative(p)
	if err != nil {
		return -1, err
	}
	how := unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(int(r.file.Fd()), rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue // EAGAIN: a concurrent rename raced the lookup; retry
		}
		if err != nil {
			return -1, fmt.Errorf("%s: %w", shown(p), osErr(err))
		}
		return fd, nil
	}
}

// osErr maps an errno to the engine's sentinels, keeping the errno wrapped.
func osErr(err error) error {
	switch {
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%w (%w)", ErrPathEscape, err)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %w", ErrExists, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", ErrPermission, err)
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	case errors.Is(err, unix.ENAMETOOLONG):
		return fmt.Errorf("%w: a name is longer than the file system allows (%v)", ErrInvalid, err)
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%w: a path component is not a directory", ErrNotFound)
	}
	return err
}

// OpenSource opens a regular file beneath the root for reading (see
// openRegular: FIFOs, sockets, devices and symbolic links are ErrInvalid).
func (r *Root) OpenSource(p string) (*os.File, fs.FileInfo, error) {
	return r.openRegular("source", p, unix.O_RDONLY)
}

// Destination is a file being received: an unnamed file in the destination
// directory (O_TMPFILE) that Commit links in under its final name, or, where
// the file system has no O_TMPFILE, a file under a partial name that Commit
// renames into place once it checked the name still holds that file.
type Destination struct {
	dir     *os.File // the destination directory (read-only, for fsync and *at calls)
	file    *os.File // the partial file, O_RDWR
	partial string   // name of the partial file inside dir (unnamed: the name Commit may link it under)
	named   bool     // the partial name holds the file (created so, or linked by Commit)
	name    string   // final name inside dir
	// FinalPath is the destination path relative to the root, as reported
	// to users; DirPath is its directory.
	FinalPath, DirPath string
	overwrite          bool
	// journal is the name of the partial file's chunk journal inside dir
	// ("" = none): Commit and Remove delete it, Keep leaves it.
	journal string
}

// partialMarker is in the name of every partial file, and a destination
// name that contains it is refused: no transfer can be prepared to a
// partial file's name and so take its place before its commit.
const partialMarker = ".rxfer-partial-"

// partialName is the partial file's name for final name name of transfer
// id: short (31 bytes) so that every final name up to NAME_MAX can be
// received, and hidden.
func partialName(name, id string) string {
	h := sha256.Sum256([]byte(id + "/" + name))
	return partialMarker + hex.EncodeToString(h[:8])
}

// CreateDestination validates a destination and creates its partial file.
// destPath names a file, or a directory (existing, or ending in "/") that
// receives sourceName. size bytes are preallocated so a full disk fails now,
// not halfway through the copy.
func (r *Root) CreateDestination(destPath, sourceName, id string, size int64, overwrite bool) (*Destination, error) {
	d, err := r.resolveDestination(destPath, sourceName, overwrite)
	if err != nil {
		return nil, err
	}
	d.partial = partialName(d.name, id)
	if err := d.create(size, knobs.namedPartial); err != nil {
		return nil, err
	}
	return d, nil
}

// resolveDestination validates a destination and opens its directory; no
// file is created yet.
func (r *Root) resolveDestination(destPath, sourceName string, overwrite bool) (*Destination, error) {
	if err := checkPath("destination path", destPath); err != nil {
		return nil, err
	}
	if err := checkPath("source name", path.Base(sourceName)); err != nil {
		return nil, err
	}
	dirPath, name := path.Split(destPath)
	if name == "" || name == "." || name == ".." {
		dirPath, name = destPath, ""
	} else if d, err := r.openat(destPath, unix.O_RDONLY|unix.O_DIRECTORY, 0); err == nil {
		d.Close() // an existing directory: the file goes inside it
		dirPath, name = destPath, ""
	}
	if name == "" {
		name = path.Base(sourceName)
		if name == "/" || name == "." || name == ".." || name == "" {
			return nil, fmt.Errorf("%w: destination %s is a directory and the source has no file name", ErrInvalid, shown(destPath))
		}
	}
	if strings.Contains(name, partialMarker) {
		return nil, fmt.Errorf("%w: destination name %s contains %q, which only rxfer's partial files may; choose another name", ErrInvalid, shown(name), partialMarker)
	}
	dir, err := r.openat(dirPath, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("destination directory %w", err)
	}
	d := &Destination{dir: dir, name: name, overwrite: overwrite,
		DirPath:   path.Join("/", strings.TrimLeft(dirPath, "/")),
		FinalPath: path.Join("/", strings.TrimLeft(dirPath, "/"), name)}
	var st unix.Stat_t
	switch err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR:
		dir.Close()
		return nil, fmt.Errorf("%w: destination %s is a directory", ErrExists, shown(d.FinalPath))
	case err == nil && !overwrite:
		dir.Close()
		return nil, fmt.Errorf("%w: destination %s exists (use overwrite / --force to replace it)", ErrExists, shown(d.FinalPath))
	case err != nil && err != unix.ENOENT:
		dir.Close()
		return nil, fmt.Errorf("destination %s: %w", shown(d.FinalPath), osErr(err))
	}
	return d, nil
}

// create creates d's partial file (named: under d.partial; else unnamed,
// where the file system can) and reserves size bytes; on failure d is
// released.
func (d *Destination) create(size int64, named bool) error {
	fd, err := -1, error(unix.EOPNOTSUPP)
	if !named {
		fd, err = unix.Openat(int(d.dir.Fd()), ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o644)
	}
	if err == unix.EOPNOTSUPP || err == unix.EISDIR { // no O_TMPFILE in this file system (EISDIR: nor in the kernel)
		d.named = true
		fd, err = unix.Openat(int(d.dir.Fd()), d.partial, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	}
	if err != nil {
		d.dir.Close()
		return fmt.Errorf("creating the partial file of %s: %w", shown(d.FinalPath), osErr(err))
	}
	d.file = os.NewFile(uintptr(fd), d.partial)
	if size > 0 {
		if err := reserve(fd, size); err != nil {
			d.Remove()
			return fmt.Errorf("preallocating %d bytes for %s: %w", size, shown(d.FinalPath), osErr(err))
		}
	}
	return nil
}

// reserve makes room for size bytes in the partial file, so that a copy
// that cannot fit fails before moving a byte. On disk filesystems that is
// fallocate: extents reserved, nothing written. On memory filesystems
// fallocate allocates and clears every page before the first byte moves —
// an extra pass over the whole file, in Prepare, that the data then
// overwrites (as long as the copy itself on a fast link: README.md). There the free space is checked
// and the file extended sparsely instead; pages are allocated as chunks land.
// On overlayfs the upper layer's free space is what statfs reports.
func reserve(fd int, size int64) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err == nil {
		switch fs.Type {
		case unix.TMPFS_MAGIC, unix.RAMFS_MAGIC, unix.OVERLAYFS_SUPER_MAGIC: // overlay: container roots, the upper layer often tmpfs
			var st unix.Stat_t // a resumed partial file holds some pages already
			if unix.Fstat(fd, &st) != nil {
				st.Blocks = 0
			}
			if fs.Blocks > 0 && int64(fs.Bavail)*fs.Bsize < size-st.Blocks*512 { // ramfs has no limit (0 blocks)
				return unix.ENOSPC
			}
			return unix.Ftruncate(fd, size)
		}
	}
	if err := unix.Fallocate(fd, 0, 0, size); err != nil && err != unix.EOPNOTSUPP {
		return err
	}
	return nil
}

// File is the partial file, open for reading and writing.
func (d *Destination) File() *os.File { return d.file }

// Base is where the transfer's first byte goes in File: the file's start.
func (d *Destination) Base() int64 { return 0 }

// Path is the final path, as users see it.
func (d *Destination) Path() string { return d.FinalPath }

// Commit makes the file durable and visible: fsync the file, give it its
// final name (refusing to replace a file that appeared meanwhile unless
// overwriting), fsync the directory. What it publishes is the file this
// Destination wrote: an unnamed file is linked in from its descriptor; a
// named one is renamed only after its name was checked to still be it.
func (d *Destination) Commit() error {
	if err := d.file.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", shown(d.FinalPath), osErr(err))
	}
	dfd := int(d.dir.Fd())
	var flags uint
	if !d.overwrite {
		flags = unix.RENAME_NOREPLACE
		if !d.named {
			// linkat never replaces a name: RENAME_NOREPLACE's rule.
			if err := linkFile(d.file, dfd, d.name); err != nil {
				return fmt.Errorf("linking into place %s: %w", shown(d.FinalPath), osErr(err))
			}
			return d.syncDir()
		}
	} else if old, err := unix.Openat(dfd, d.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		// Hold the file being replaced open across the rename: its last
		// reference then goes in the background, so freeing its pages
		// or extents (README.md) is not part of the commit.
		defer func() { go unix.Close(old) }()
	}
	if !d.named {
		// Replacing takes a rename, and a rename takes a name: link the
		// file under its partial name first.
		if err := linkFile(d.file, dfd, d.partial); err != nil {
			return fmt.Errorf("linking the partial file of %s: %w", shown(d.FinalPath), osErr(err))
		}
		d.named = true
	}
	if err := d.samePartial(); err != nil {
		return err
	}
	if err := unix.Renameat2(dfd, d.partial, dfd, d.name, flags); err != nil {
		return fmt.Errorf("renaming into place %s: %w", shown(d.FinalPath), osErr(err))
	}
	if d.journal != "" { // the file is complete: nothing to resume
		unix.Unlinkat(dfd, d.journal, 0)
	}
	return d.syncDir()
}

// samePartial checks that the partial name still holds the file this
// Destination wrote, right before it is renamed into place.
func (d *Destination) samePartial() error {
	var mine, named unix.Stat_t
	if err := unix.Fstat(int(d.file.Fd()), &mine); err != nil {
		return fmt.Errorf("fstat %s: %w", shown(d.FinalPath), osErr(err))
	}
	err := unix.Fstatat(int(d.dir.Fd()), d.partial, &named, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && (named.Dev != mine.Dev || named.Ino != mine.Ino) {
		err = errors.New("another file has its name")
	}
	if err != nil {
		return fmt.Errorf("%w: the partial file of %s is not the file received (%v); nothing was published", ErrCorrupt, shown(d.FinalPath), err)
	}
	return nil
}

// linkFile gives the unnamed (O_TMPFILE) file f the name name in directory
// dfd. Through /proc/self/fd it needs no privilege; AT_EMPTY_PATH, tried
// where /proc is not mounted, needs CAP_DAC_READ_SEARCH.
func linkFile(f *os.File, dfd int, name string) error {
	err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), dfd, name, unix.AT_SYMLINK_FOLLOW)
	if err == unix.ENOENT {
		err = unix.Linkat(int(f.Fd()), "", dfd, name, unix.AT_EMPTY_PATH)
	}
	return err
}

// syncDir makes the new name durable and releases the descriptors.
func (d *Destination) syncDir() error {
	if err := d.dir.Sync(); err != nil {
		return fmt.Errorf("fsync directory of %s: %w", shown(d.FinalPath), osErr(err))
	}
	d.file.Close()
	d.dir.Close()
	return nil
}

// Remove deletes the partial file and releases the descriptors. It is safe
// to call after a failed Commit.
func (d *Destination) Remove() {
	d.file.Close() // an unnamed file is gone with its last descriptor
	if d.named {
		unix.Unlinkat(int(d.dir.Fd()), d.partial, 0) // ENOENT after a successful rename: nothing to do
	}
	if d.journal != "" {
		unix.Unlinkat(int(d.dir.Fd()), d.journal, 0)
	}
	d.dir.Close()
}

// Keep releases the descriptors and leaves the partial file and its
// journal in place, for a later copy to resume.
func (d *Destination) Keep() {
	d.file.Close()
	d.dir.Close()
}
