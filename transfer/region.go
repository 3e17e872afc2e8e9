package transfer

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultMaxRegistered caps the bytes of all regions of a node.
const DefaultMaxRegistered = 4 << 30

// RegionRef names a window of a region: Length 0 means to the region's end.
type RegionRef struct {
	Name   string
	Offset int64
	Length int64
}

func (r RegionRef) String() string { return fmt.Sprintf("@%s:%d:%d", r.Name, r.Offset, r.Length) }

// RegionInfo describes a registered region.
type RegionInfo struct {
	Name    string
	Size    int64
	Backing string // "anonymous" or the file's path beneath the root
	Created time.Time
	InUse   int // transfers using it now
}

// region is a named piece of memory on a node that transfers can read from
// and write into: anonymous memory (a memfd, so both transports can use its
// descriptor: sendfile, splice, pread/pwrite) or a file beneath the root.
type region struct {
	info RegionInfo
	file *os.File
}

// validRegionName reports whether name is 1-64 letters, digits, '.', '_' or '-'.
func validRegionName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, c := range name {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// RegisterRegion creates a named region: size bytes of anonymous memory, or,
// when path is set, a regular file beneath the root (size 0 = the whole file).
// The node's regions together may not exceed Config.MaxRegistered bytes.
func (n *Node) RegisterRegion(name string, size int64, path string) (RegionInfo, error) {
	if !validRegionName(name) {
		return RegionInfo{}, fmt.Errorf("%w: region name %q (want 1-64 letters, digits, '.', '_' or '-')", ErrInvalid, name)
	}
	if size < 0 || (path == "" && size == 0) {
		return RegionInfo{}, fmt.Errorf("%w: region size %d (an anonymous region needs a size > 0)", ErrInvalid, size)
	}
	var f *os.File
	backing := "anonymous"
	if strings.Contains(path, partialMarker) {
		// A resumable partial file is named: a region over it could write
		// into chunks already verified (resume.go).
		return RegionInfo{}, fmt.Errorf("%w: region file %s is an rxfer partial file or journal; choose another file", ErrInvalid, shown(path))
	}
	if path != "" {
		var err error
		var st os.FileInfo
		f, st, err = n.cfg.Root.openRegular("region file", path, unix.O_RDWR)
		if err != nil {
			return RegionInfo{}, err
		}
		if size == 0 {
			size = st.Size()
		}
		if size == 0 || size > st.Size() {
			f.Close()
			return RegionInfo{}, fmt.Errorf("%w: region of %d bytes over file %q of %d bytes", ErrOutOfRange, size, path, st.Size())
		}
		backing = path
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	closeFile := func() {
		if f != nil {
			f.Close()
		}
	}
	if _, dup := n.regions[name]; dup {
		closeFile()
		return RegionInfo{}, fmt.Errorf("%w: region %q on node %s", ErrExists, name, n.cfg.ID)
	}
	var total int64
	for _, r := range n.regions {
		total += r.info.Size
	}
	if total+size > n.cfg.MaxRegistered {
		closeFile()
		return RegionInfo{}, fmt.Errorf("%w: %d bytes of regions plus %d exceed the node's limit of %d (--max-registered)",
			ErrRegionLimit, total, size, n.cfg.MaxRegistered)
	}
	if f == nil {
		fd, err := unix.MemfdCreate("rxfer-region-"+name, unix.MFD_CLOEXEC)
		if err != nil {
			return RegionInfo{}, fmt.Errorf("region %q: memfd_create: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), "region:"+name)
		if err := f.Truncate(size); err != nil {
			f.Close()
			return RegionInfo{}, fmt.Errorf("region %q: sizing to %d bytes: %w", name, size, osErr(err))
		}
	}
	r := &region{info: RegionInfo{Name: name, Size: size, Backing: backing, Created: time.Now()}, file: f}
	n.regions[name] = r
	n.log.Info("region registered", "region", name, "size", size, "backing", backing)
	return r.info, nil
}

// DeregisterRegion frees a region; a region in use by a transfer is refused.
func (n *Node) DeregisterRegion(name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.regions[name]
	switch {
	case !ok:
		return fmt.Errorf("%w: no region %q on node %s", ErrNotFound, name, n.cfg.ID)
	case r.info.InUse > 0:
		return fmt.Errorf("%w: region %q is used by %d transfer(s); cancel them first", ErrBusy, name, r.info.InUse)
	}
	delete(n.regions, name)
	return r.file.Close()
}

// Regions lists the node's regions by name.
func (n *Node) Regions() []RegionInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]RegionInfo, 0, len(n.regions))
	for _, r := range n.regions {
		out = append(out, r.info)
	}
	slices.SortFunc(out, func(a, b RegionInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// acquireRegion pins the window ref of a region for a transfer. want is the
// length the transfer needs (-1: whatever ref says). It returns the region's
// file, the window's offset and length, and the release function.
func (n *Node) acquireRegion(ref RegionRef, want int64) (f *os.File, off, length int64, release func(), err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.regions[ref.Name]
	if !ok {
		return nil, 0, 0, nil, fmt.Errorf("%w: no region %q on node %s", ErrNotFound, ref.Name, n.cfg.ID)
	}
	off, length, err = regionWindow(r.info.Size, ref, want)
	if err != nil {
		return nil, 0, 0, nil, err
	}
	r.info.InUse++
	var once sync.Once
	return r.file, off, length, func() {
		once.Do(func() {
			n.mu.Lock()
			r.info.InUse--
			n.mu.Unlock()
		})
	}, nil
}

// regionWindow checks the window ref of a region of size bytes and returns
// its offset and length. want is the length a transfer needs (-1: whatever
// ref says; ref.Length 0 means to the region's end). The sums are checked
// without overflowing: a window that does not lie within the region is
// ErrOutOfRange.
func regionWindow(size int64, ref RegionRef, want int64) (off, length int64, err error) {
	if ref.Offset < 0 || ref.Offset > size {
		return 0, 0, fmt.Errorf("%w: offset %d is outside region %q of %d bytes", ErrOutOfRange, ref.Offset, ref.Name, size)
	}
	length = ref.Length
	if length == 0 {
		length = size - ref.Offset
	}
	if want >= 0 {
		if ref.Length != 0 && ref.Length != want {
			return 0, 0, fmt.Errorf("%w: window of %d bytes for %d bytes of data", ErrOutOfRange, ref.Length, want)
		}
		length = want
	}
	if length < 0 || length > size-ref.Offset { // size-Offset >= 0: no overflow
		return 0, 0, fmt.Errorf("%w: offset %d + length %d exceeds region %q of %d bytes",
			ErrOutOfRange, ref.Offset, length, ref.Name, size)
	}
	return ref.Offset, length, nil
}

// regionTarget is an incoming transfer's destination inside a region. There
// is nothing to rename: Commit makes a file-backed region durable, and a
// failed transfer leaves the window's old bytes partly overwritten.
type regionTarget struct {
	file    *os.File
	off     int64
	ref     RegionRef
	release func()
}

// anonymousRegion reports whether f is the file of region name and the
// region is memfd-backed: its memory a window receiver may register for
// remote writes (and a sender for local reads). A
// file-backed region is not: a long-term writable pin of a MAP_SHARED mapping
// of a regular file (what ibv_reg_mr with REMOTE_WRITE needs) is discouraged
// by the kernel's mm developers and refused by recent kernels, so those
// windows keep the staging receiver, which writes through a plain mapping.
func (n *Node) anonymousRegion(name string, f *os.File) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.regions[name]
	return ok && r.file == f && r.info.Backing == "anonymous"
}

func (t *regionTarget) File() *os.File { return t.file }
func (t *regionTarget) Base() int64    { return t.off }
func (t *regionTarget) Path() string   { return t.ref.String() }
func (t *regionTarget) Remove()        { t.release() }
func (t *regionTarget) Commit() error {
	defer t.release()
	if err := t.file.Sync(); err != nil { // no-op for memory, durability for a file
		return fmt.Errorf("fsync region %q: %w", t.ref.Name, osErr(err))
	}
	return nil
}
