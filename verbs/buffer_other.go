//go:build !linux

package verbs

// Buffer is anonymous, page-aligned memory outside the Go heap. Only
// available on Linux.
type Buffer struct{ mem []byte }

// NewBuffer fails with [ErrNotSupported] outside Linux.
func NewBuffer(size int) (*Buffer, error) { return nil, &Error{Op: "mmap", Err: ErrNotSupported} }

// Bytes returns the memory.
func (b *Buffer) Bytes() []byte { return b.mem }

// Close does nothing outside Linux.
func (b *Buffer) Close() error { return nil }
