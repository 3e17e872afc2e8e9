package transfer

import (
	"os"

	"golang.org/x/sys/unix"
)

// Both ends of a transfer work through a mapping of their file: the source
// checksums chunks from it (and RDMA copies or registers it), the
// destination's RDMA lanes land chunks in it.

// mapRange maps [off, off+length) of f MAP_SHARED with protection prot:
// from the page boundary below off, sliced to the range.
func mapRange(f *os.File, off, length int64, prot int) (mem []byte, unmap func() error, err error) {
	start := off &^ int64(unix.Getpagesize()-1)
	lead := int(off - start)
	m, err := unix.Mmap(int(f.Fd()), start, lead+int(length), prot, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return m[lead : lead+int(length)], func() error { return unix.Munmap(m) }, nil
}
