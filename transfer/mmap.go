package transfer

import (
	"os"
	"unsafe"

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

// releasePages drops the whole pages of mem[off:off+n] from this process's
// page tables (MADV_DONTNEED). For a MAP_SHARED file mapping the bytes stay
// in the page cache and a later read faults them back in; what changes is
// that pages a push is done with stop counting as the daemon's resident
// memory (a 1 GiB source made the sender's peak RSS 1 GiB).
func releasePages(mem []byte, off, n int64) {
	if n <= 0 || off < 0 || off+n > int64(len(mem)) {
		return
	}
	page := int64(unix.Getpagesize())
	base := int64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
	start := (base+off+page-1)&^(page-1) - base // round inward: a page shared with a neighbour stays
	end := (base+off+n)&^(page-1) - base
	if end > start {
		unix.Madvise(mem[start:end], unix.MADV_DONTNEED) // a hint: on failure the pages just stay
	}
}
