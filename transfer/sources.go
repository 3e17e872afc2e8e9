package transfer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// openRegular opens p beneath the root as a regular file without blocking:
// O_NONBLOCK so that opening a FIFO (or a device) returns at once,
// O_NOFOLLOW so that the name is the file, then fstat; anything but a
// regular file is ErrInvalid before any call that could block on it.
// O_NONBLOCK is cleared again (it means nothing to a regular file, but the
// descriptor then goes to sendfile, splice and Go's os.File).
func (r *Root) openRegular(what, p string, flags uint64) (*os.File, fs.FileInfo, error) {
	fd, err := r.openatFD(p, flags|unix.O_NONBLOCK|unix.O_NOFOLLOW, 0)
	switch {
	case errors.Is(err, unix.ELOOP):
		// A symbolic link (or a loop of them): say where it leads, if out of the root.
		lfd, lerr := r.openatFD(p, unix.O_PATH, 0)
		if lerr != nil {
			return nil, nil, fmt.Errorf("%s %w", what, lerr)
		}
		unix.Close(lfd)
		return nil, nil, fmt.Errorf("%w: %s %s is a symbolic link, not a regular file; name the file it points to", ErrInvalid, what, shown(p))
	case errors.Is(err, unix.ENXIO): // a socket, or a device without its driver
		return nil, nil, fmt.Errorf("%w: %s %s is not a regular file", ErrInvalid, what, shown(p))
	case err != nil:
		return nil, nil, fmt.Errorf("%s %w", what, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("%s %s: %w", what, shown(p), osErr(err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("%w: %s %s is not a regular file (%s)", ErrInvalid, what, shown(p), fileType(st.Mode))
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("%s %s: %w", what, shown(p), err)
	}
	rel, _ := relative(p)
	f := os.NewFile(uintptr(fd), path.Join(r.dir, rel))
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s %s: %w", what, shown(p), osErr(err))
	}
	return f, fi, nil
}

// fileType names the type of a stat mode that is not a regular file.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("file type %#o", mode&unix.S_IFMT)
}
