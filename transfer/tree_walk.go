package transfer

import (
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// WalkTree reads the tree at p beneath the root into a manifest, on the
// source node: directories (empty ones too), regular files with their data
// ranges when sparse (SEEK_DATA/SEEK_HOLE), and symbolic links that stay in
// the tree. A link that could lead out of it fails the walk, naming it;
// FIFOs, sockets and devices are skipped, each with a warning, and so are
// rxfer's own partial files. Mode, mtime and owner are always recorded
// (the destination applies them when the manifest says Preserve).
func (r *Root) WalkTree(p string, limits TreeLimits) (m *TreeManifest, warnings []string, err error) {
	fd, err := r.openatFD(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("source %w", err)
	}
	w := &treeWalker{m: &TreeManifest{}, limits: limits}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, nil, fmt.Errorf("source %s: %w", shown(p), osErr(err))
	}
	if err := w.add(TreeEntry{Path: ".", Kind: TreeDir}, &st); err != nil {
		return nil, nil, err
	}
	if err := w.dir(fd, "."); err != nil {
		return nil, nil, err
	}
	return w.m, w.warnings, nil
}

type treeWalker struct {
	m        *TreeManifest
	warnings []string
	limits   TreeLimits
	bytes    int64
}

// add appends e with st's metadata, within the limits a destination puts
// on a manifest (so the source fails first, with the same message).
func (w *treeWalker) add(e TreeEntry, st *unix.Stat_t) error {
	e.Mode = st.Mode & 0o7777
	e.MtimeNs = st.Mtim.Nano()
	e.UID, e.GID = st.Uid, st.Gid
	b, err := w.limits.checkLimits(len(w.m.Entries), w.bytes, []TreeEntry{e})
	if err != nil {
		return err
	}
	w.bytes = b
	w.m.Entries = append(w.m.Entries, e)
	return nil
}

// dir adds the entries of directory fd (at rel in the tree), depth first.
func (w *treeWalker) dir(fd int, rel string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return fmt.Errorf("reading source directory %s: %w", shown(rel), osErr(err))
	}
	for _, name := range names {
		p := name
		if rel != "." {
			p = rel + "/" + name
		}
		if strings.Contains(name, partialMarker) {
			w.warnings = append(w.warnings, fmt.Sprintf("skipped %s: an rxfer partial file", p))
			continue
		}
		if err := checkTreeName(p, false); err != nil {
			return fmt.Errorf("source tree: %w", err)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("source %s: %w", shown(p), osErr(err))
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := w.add(TreeEntry{Path: p, Kind: TreeDir}, &st); err != nil {
				return err
			}
			cfd, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("source directory %s: %w", shown(p), osErr(err))
			}
			err = w.dir(cfd, p)
			unix.Close(cfd)
			if err != nil {
				return err
			}
		case unix.S_IFREG:
			e := TreeEntry{Path: p, Kind: TreeFile, Size: st.Size}
			if st.Size > 0 && st.Blocks*512 < st.Size { // fewer blocks than bytes: maybe holes
				if e.Data, err = dataRanges(fd, name, st.Size); err != nil {
					return fmt.Errorf("source %s: %w", shown(p), osErr(err))
				}
			}
			if err := w.add(e, &st); err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := readlinkat(fd, name)
			if err != nil {
				return fmt.Errorf("source link %s: %w", shown(p), osErr(err))
			}
			if err := checkLinkTarget(p, target); err != nil {
				return fmt.Errorf("source tree: %w; copy what it points to separately, or remove the link", err)
			}
			if err := w.add(TreeEntry{Path: p, Kind: TreeSymlink, Target: target}, &st); err != nil {
				return err
			}
		default:
			w.warnings = append(w.warnings, fmt.Sprintf("skipped %s: %s", p, fileType(st.Mode)))
		}
	}
	return nil
}

// readDirNames returns the names in directory fd, sorted (a manifest's
// order, and so its hash, does not depend on the directory's).
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), ".")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

func readlinkat(fd int, name string) (string, error) {
	buf := make([]byte, MaxPathLen+1)
	n, err := unix.Readlinkat(fd, name, buf)
	if err != nil {
		return "", err
	}
	if n > MaxPathLen {
		return "", unix.ENAMETOOLONG
	}
	return string(buf[:n]), nil
}

// dataRanges returns the data ranges of file name in directory fd
// (SEEK_DATA/SEEK_HOLE); a file system without them reports one range.
func dataRanges(dfd int, name string, size int64) ([]DataRange, error) {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []DataRange
	for off := int64(0); off < size; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO { // no data after off: the rest is a hole
			break
		}
		if err != nil {
			return []DataRange{{0, size}}, nil // no SEEK_DATA here: send it all
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return []DataRange{{0, size}}, nil
		}
		end = min(end, size)
		if end > start {
			out = append(out, DataRange{start, end - start})
		}
		off = end
	}
	if out == nil {
		out = []DataRange{} // all hole: no data, but not "the whole file"
	}
	return out, nil
}

// treeSourcePath joins a tree's root and an entry's path.
func treeSourcePath(root, rel string) string {
	if rel == "." {
		return root
	}
	return path.Join(root, rel)
}
