//go:build linux

package verbs

import (
	"os"
	"sync"
	"syscall"
)

// Buffer is anonymous, page-aligned memory outside the Go heap, suitable for
// registration with [ProtectionDomain.RegisterMemory]. It is marked
// MADV_DONTFORK so a fork (e.g. os/exec) never gives a child a copy-on-write
// view of pinned pages.
type Buffer struct {
	mu  sync.Mutex
	mem []byte
}

// NewBuffer maps size bytes, rounded up to whole pages, zero-filled.
func NewBuffer(size int) (*Buffer, error) {
	if size <= 0 {
		return nil, &Error{Op: "mmap", Err: syscall.EINVAL}
	}
	page := os.Getpagesize()
	n := (size + page - 1) / page * page
	mem, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return nil, &Error{Op: "mmap", Err: err}
	}
	if err := syscall.Madvise(mem, syscall.MADV_DONTFORK); err != nil {
		syscall.Munmap(mem)
		return nil, &Error{Op: "madvise(MADV_DONTFORK)", Err: err}
	}
	return &Buffer{mem: mem[:size:n]}, nil
}

// Bytes returns the memory. It must not be used after Close.
func (b *Buffer) Bytes() []byte { return b.mem }

// Close unmaps the memory. Deregister every region over it first.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mem == nil {
		return nil
	}
	err := syscall.Munmap(b.mem[:cap(b.mem)])
	b.mem = nil
	if err != nil {
		return &Error{Op: "munmap", Err: err}
	}
	return nil
}
