package transfer

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"
)

// Directory trees (issue 17): one transfer carries a whole tree. Its
// Prepare carries a manifest, an entry for every directory, regular file
// and symbolic link, parents before children; its byte stream is the
// files' data ranges concatenated in manifest order, cut into chunks like
// a single file's bytes, so small files share a chunk and a big file spans
// several (chunk.Extent).

// TreeKind is the type of a manifest entry.
type TreeKind uint8

// Manifest entry kinds; the numbers are on the wire.
const (
	TreeDir     TreeKind = 1
	TreeFile    TreeKind = 2
	TreeSymlink TreeKind = 3
)

func (k TreeKind) String() string {
	switch k {
	case TreeDir:
		return "directory"
	case TreeFile:
		return "file"
	case TreeSymlink:
		return "symbolic link"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// DataRange is a run of a file's data: a sparse file sends only these and
// its holes stay holes at the destination (which sizes the file with
// ftruncate and writes only the ranges).
type DataRange struct {
	Offset, Length int64
}

// TreeEntry is one entry of a tree manifest.
type TreeEntry struct {
	// Path is relative to the tree's root, slash-separated and clean; the
	// root itself is ".", the manifest's first entry.
	Path    string
	Kind    TreeKind
	Size    int64  // a regular file's size
	Mode    uint32 // permission bits (0o7777)
	MtimeNs int64
	UID     uint32 // kept only when the destination runs as root
	GID     uint32
	Target  string // a symbolic link's target
	// Data are a sparse file's data ranges, in order; nil: all of [0, Size).
	Data []DataRange
}

// TreeManifest describes a tree.
type TreeManifest struct {
	Entries []TreeEntry
	// Preserve: the destination applies mode, mtime and (as root) owner;
	// otherwise files get 0644, directories 0755 (less the umask) and the
	// time of the copy.
	Preserve bool
}

// Limits of a tree manifest; Config overrides the first two
// (serve --tree-max-entries, --tree-max-manifest-bytes).
const (
	// DefaultTreeMaxEntries is the most entries a manifest may have.
	DefaultTreeMaxEntries = 1 << 20
	// DefaultTreeMaxManifestBytes bounds a manifest's size (names, targets,
	// a fixed cost per entry and per data range: treeEntryCost).
	DefaultTreeMaxManifestBytes = 256 << 20
	// MaxTreeRanges bounds the data ranges of all sparse files of a tree.
	MaxTreeRanges = 1 << 22
	// TreeBatchEntries is the most entries one Prepare batch carries.
	TreeBatchEntries = 8192
	// TreeBatchBytes bounds the manifest bytes one Prepare batch carries
	// (well under gRPC's 4 MiB message limit).
	TreeBatchBytes = 1 << 20
	// treeEntryCost and treeRangeCost are the bytes an entry and a data
	// range count beyond their strings.
	treeEntryCost = 64
	treeRangeCost = 16
)

// ErrTreeLimit: a manifest exceeds one of the tree limits (the error names
// it). The service layer maps it to ResourceExhausted.
var ErrTreeLimit = errors.New("tree manifest limit exceeded")

// TreeLimits are the bounds a destination puts on a manifest.
type TreeLimits struct {
	MaxEntries int
	MaxBytes   int64
}

func (n *Node) treeLimits() TreeLimits {
	l := TreeLimits{MaxEntries: n.cfg.TreeMaxEntries, MaxBytes: n.cfg.TreeMaxManifestBytes}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultTreeMaxEntries
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultTreeMaxManifestBytes
	}
	return l
}

// EntryBytes is what e counts against the manifest byte limit.
func (e TreeEntry) EntryBytes() int64 {
	return treeEntryCost + int64(len(e.Path)) + int64(len(e.Target)) + treeRangeCost*int64(len(e.Data))
}

// DataBytes is the number of bytes of e that travel (its data ranges').
func (e TreeEntry) DataBytes() int64 {
	if e.Kind != TreeFile {
		return 0
	}
	if e.Data == nil {
		return e.Size
	}
	var n int64
	for _, r := range e.Data {
		n += r.Length
	}
	return n
}

// ranges are e's data ranges (the whole file unless sparse).
func (e TreeEntry) ranges() []DataRange {
	if e.Data != nil {
		return e.Data
	}
	if e.Size == 0 {
		return nil
	}
	return []DataRange{{0, e.Size}}
}

// checkLimits counts what adding entries to a manifest of have entries and
// haveBytes bytes would hold, before anything is allocated for them.
func (l TreeLimits) checkLimits(have int, haveBytes int64, entries []TreeEntry) (int64, error) {
	if len(entries) > l.MaxEntries-have {
		return 0, fmt.Errorf("%w: the manifest has more than %d entries (serve --tree-max-entries on the destination)", ErrTreeLimit, l.MaxEntries)
	}
	b := haveBytes
	for _, e := range entries {
		b += e.EntryBytes()
		if b > l.MaxBytes {
			return 0, fmt.Errorf("%w: the manifest is larger than %d bytes (serve --tree-max-manifest-bytes on the destination)", ErrTreeLimit, l.MaxBytes)
		}
	}
	return b, nil
}

// ValidateTree checks a manifest from a peer before anything is created:
// the limits, every name (clean, relative, beneath the root, no NUL or
// control character, components of at most MaxNameLen bytes, no partial
// file's name), parents before children and each parent a directory, no
// duplicate, symbolic links that stay in the tree, modes, sizes and data
// ranges. It returns the number of bytes the tree's stream carries. The
// errors name the entry.
func ValidateTree(m *TreeManifest, l TreeLimits) (int64, error) {
	if _, err := l.checkLimits(0, 0, m.Entries); err != nil {
		return 0, err
	}
	if len(m.Entries) == 0 || m.Entries[0].Path != "." || m.Entries[0].Kind != TreeDir {
		return 0, fmt.Errorf("%w: a tree manifest starts with its root, a directory named \".\"", ErrInvalid)
	}
	kinds := make(map[string]TreeKind, len(m.Entries))
	var total int64
	ranges := 0
	for i, e := range m.Entries {
		if err := checkTreeName(e.Path, i == 0); err != nil {
			return 0, err
		}
		if k, dup := kinds[e.Path]; dup {
			if k != e.Kind {
				return 0, fmt.Errorf("%w: manifest entry %s is both a %s and a %s", ErrInvalid, shown(e.Path), k, e.Kind)
			}
			return 0, fmt.Errorf("%w: manifest entry %s appears twice", ErrInvalid, shown(e.Path))
		}
		if i > 0 {
			parent := path.Dir(e.Path)
			switch k, ok := kinds[parent]; {
			case !ok:
				return 0, fmt.Errorf("%w: manifest entry %s comes before its directory %s (parents come first)", ErrInvalid, shown(e.Path), shown(parent))
			case k != TreeDir:
				return 0, fmt.Errorf("%w: manifest entry %s is inside %s, which is a %s", ErrInvalid, shown(e.Path), shown(parent), k)
			}
		}
		kinds[e.Path] = e.Kind
		if e.Mode&^0o7777 != 0 {
			return 0, fmt.Errorf("%w: manifest entry %s has mode %#o (want permission bits only, 0o7777)", ErrInvalid, shown(e.Path), e.Mode)
		}
		switch e.Kind {
		case TreeDir, TreeSymlink:
			if e.Size != 0 || e.Data != nil {
				return 0, fmt.Errorf("%w: manifest entry %s, a %s, has a size or data", ErrInvalid, shown(e.Path), e.Kind)
			}
			if e.Kind == TreeSymlink {
				if err := checkLinkTarget(e.Path, e.Target); err != nil {
					return 0, err
				}
			} else if e.Target != "" {
				return 0, fmt.Errorf("%w: manifest entry %s, a directory, has a link target", ErrInvalid, shown(e.Path))
			}
		case TreeFile:
			if e.Target != "" {
				return 0, fmt.Errorf("%w: manifest entry %s, a file, has a link target", ErrInvalid, shown(e.Path))
			}
			if e.Size < 0 {
				return 0, fmt.Errorf("%w: manifest entry %s has a negative size %d", ErrInvalid, shown(e.Path), e.Size)
			}
			if ranges += len(e.Data); ranges > MaxTreeRanges {
				return 0, fmt.Errorf("%w: the manifest's sparse files have more than %d data ranges", ErrTreeLimit, MaxTreeRanges)
			}
			end := int64(0)
			for _, r := range e.Data {
				if r.Offset < end || r.Length <= 0 || r.Offset > e.Size-r.Length {
					return 0, fmt.Errorf("%w: manifest entry %s has data range %d+%d outside its %d bytes or out of order", ErrInvalid, shown(e.Path), r.Offset, r.Length, e.Size)
				}
				end = r.Offset + r.Length
			}
			if d := e.DataBytes(); d > math.MaxInt64-total {
				return 0, fmt.Errorf("%w: the tree's files add up to more than 2^63 bytes", ErrInvalid)
			} else {
				total += d
			}
		default:
			return 0, fmt.Errorf("%w: manifest entry %s has unknown kind %d", ErrInvalid, shown(e.Path), e.Kind)
		}
	}
	return total, nil
}

// checkTreeName refuses a manifest path that is not a clean relative path
// beneath the tree's root, or that a node must not create.
func checkTreeName(p string, root bool) error {
	if err := checkPath("manifest entry", p); err != nil {
		return err
	}
	switch {
	case p == ".":
		if !root {
			return fmt.Errorf("%w: manifest entry \".\" (the root) may only come first", ErrInvalid)
		}
		return nil
	case p == "":
		return fmt.Errorf("%w: a manifest entry has an empty name", ErrInvalid)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("%w: manifest entry %s is absolute (want a path relative to the tree's root)", ErrPathEscape, shown(p))
	case p == ".." || strings.HasPrefix(p, "../") || strings.HasSuffix(p, "/..") || strings.Contains(p, "/../"):
		return fmt.Errorf("%w: manifest entry %s climbs out with \"..\"", ErrPathEscape, shown(p))
	case path.Clean(p) != p:
		return fmt.Errorf("%w: manifest entry %s is not a clean path (empty or \".\" components, trailing \"/\")", ErrInvalid, shown(p))
	case strings.Contains(p, partialMarker):
		return fmt.Errorf("%w: manifest entry %s contains %q, which only rxfer's partial files may", ErrInvalid, shown(p), partialMarker)
	}
	return nil
}

// checkLinkTarget refuses a symbolic link whose target could lead out of
// the tree. The target must be relative and clean (so ".." appears only
// at its start) and climb no higher than the link's own directory is deep.
// Every entry's parent is a directory of the manifest, so the climb ends
// at a directory of the tree, and the names after it lead down from there;
// any link met on the way obeys the same rule (by induction, resolving
// stays in the tree). A lexical "a/../.." cleaned would not be enough when
// "a" is itself a link: that is why unclean targets are refused.
func checkLinkTarget(p, target string) error {
	if err := checkChars("link target", target); err != nil {
		return err
	}
	depth := strings.Count(p, "/") // of the link's directory below the root
	switch {
	case target == "":
		return fmt.Errorf("%w: symbolic link %s has an empty target", ErrInvalid, shown(p))
	case len(target) > MaxPathLen:
		return fmt.Errorf("%w: symbolic link %s has a target of %d bytes (limit %d)", ErrInvalid, shown(p), len(target), MaxPathLen)
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("%w: symbolic link %s points out of the tree (absolute target %s)", ErrPathEscape, shown(p), shown(target))
	case path.Clean(target) != target:
		return fmt.Errorf("%w: symbolic link %s has target %s, which is not a clean path (rxfer copies only links that provably stay in the tree)", ErrPathEscape, shown(p), shown(target))
	}
	up := 0
	for c := range strings.SplitSeq(target, "/") {
		if c != ".." {
			break
		}
		up++
	}
	if up > depth {
		return fmt.Errorf("%w: symbolic link %s points out of the tree (target %s)", ErrPathEscape, shown(p), shown(target))
	}
	return nil
}

// TreeHash is a manifest's identity: the tree a partial copy holds bytes
// of. A changed tree (any entry, size, mtime, data range) hashes
// differently, and its copy starts over.
func TreeHash(m *TreeManifest, chunkSize int64) [32]byte {
	h := sha256.New()
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, uint64(chunkSize))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(m.Entries)))
	h.Write(b)
	for _, e := range m.Entries {
		b = b[:0]
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Path)))
		b = append(b, e.Path...)
		b = append(b, byte(e.Kind))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Size))
		b = binary.LittleEndian.AppendUint64(b, uint64(e.MtimeNs))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Target)))
		b = append(b, e.Target...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Data)))
		for _, r := range e.Data {
			b = binary.LittleEndian.AppendUint64(b, uint64(r.Offset))
			b = binary.LittleEndian.AppendUint64(b, uint64(r.Length))
		}
		h.Write(b)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// treeSeg is a run of a tree's stream in one file: stream bytes
// [stream, stream+n) are bytes [off, off+n) of file.
type treeSeg struct {
	stream, off, n int64
	file           int // index in treeLayout.files
}

// treeLayout maps a tree's stream to its files, on either end.
type treeLayout struct {
	files []int // manifest index of each regular file
	segs  []treeSeg
	size  int64
}

// newTreeLayout lays out m's regular files' data ranges in manifest order.
func newTreeLayout(m *TreeManifest) *treeLayout {
	l := &treeLayout{}
	for i, e := range m.Entries {
		if e.Kind != TreeFile {
			continue
		}
		fi := len(l.files)
		l.files = append(l.files, i)
		for _, r := range e.ranges() {
			l.segs = append(l.segs, treeSeg{stream: l.size, off: r.Offset, n: r.Length, file: fi})
			l.size += r.Length
		}
	}
	return l
}

// span calls f for each run of stream bytes [off, off+n), in order.
func (l *treeLayout) span(off, n int64, f func(s treeSeg) error) error {
	if off < 0 || n < 0 || off > l.size-n {
		return fmt.Errorf("%w: bytes %d+%d of a %d-byte tree", ErrInvalid, off, n, l.size)
	}
	i, found := slices.BinarySearchFunc(l.segs, off, func(s treeSeg, off int64) int {
		switch {
		case s.stream+s.n <= off:
			return -1
		case s.stream > off:
			return 1
		}
		return 0
	})
	if !found && n > 0 {
		return fmt.Errorf("%w: no file holds byte %d of the tree", ErrInvalid, off)
	}
	for ; n > 0 && i < len(l.segs); i++ {
		s := l.segs[i]
		skip := off - s.stream
		take := min(s.n-skip, n)
		if err := f(treeSeg{stream: off, off: s.off + skip, n: take, file: s.file}); err != nil {
			return err
		}
		off += take
		n -= take
	}
	return nil
}

// filesIn returns the files (layout indexes) whose bytes are in stream
// bytes [off, off+n).
func (l *treeLayout) filesIn(off, n int64) []int {
	var out []int
	l.span(off, n, func(s treeSeg) error {
		if len(out) == 0 || out[len(out)-1] != s.file {
			out = append(out, s.file)
		}
		return nil
	})
	return out
}
