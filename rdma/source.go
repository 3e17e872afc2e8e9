package rdma

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"unsafe"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/verbs"
)

// Source is where a Send takes its chunks' bytes from.
type Source struct {
	// File is read with pread into the staging buffers unless Bytes is set.
	File *os.File
	// Bytes, when set, holds the source from offset Base on (Chunk.Offset
	// Base is Bytes[0]) and must stay valid until Send returns. By default
	// the staging buffers are filled by copying from it: a user-space copy
	// from a mapping where pread's is the kernel's rep movsb, which qemu TCG
	// runs a byte at a time (README.md); a mapping that faults (the file
	// shrank) fails the chunk like a short read.
	Bytes []byte
	Base  int64
	// Register, with Bytes, registers Bytes (local read access) for the
	// Send and WRITEs straight from it, with no copy: for memory that is
	// cheap to register, such as a MAP_SHARED read-write mapping of a memfd
	// (milliseconds for 128 MiB). It is deregistered when Send returns.
	Register bool
	// Layout, when set, says where each chunk's bytes are (a directory
	// tree's chunks span several files): a chunk's staging buffer is filled
	// by pread from its extents in order. File, Bytes and Register must be
	// unset. An Extents error (or extents that do not add up,
	// chunk.CheckLayout) fails that chunk alone.
	Layout chunk.Layout
}

// RegisterSource registers mem (local read access only) for the next Send,
// ahead of it: a caller that knows the source memory before the receiver has
// answered (Source.Register) overlaps the registration, which pins every
// page, with the receiver's own set-up. That Send writes from it when its
// Source.Bytes is mem (else it is deregistered) and deregisters it at the
// end; Park, Close and DropSource drop it if no Send took it. mem must stay
// mapped until then (the registration pins its pages, and a new mapping at
// the same address would look like the same memory). It must not be called
// while Send runs.
func (s *Sender) RegisterSource(mem []byte) error {
	if s.ep == nil {
		return errors.New("rdma: sender closed")
	}
	s.DropSource()
	if len(mem) == 0 {
		return nil
	}
	mr, err := s.registerSource(mem)
	s.pre = mr
	return err
}

// registerSource registers source memory for local reads only: WRITEs take
// their bytes from it, nothing else may touch it.
func (s *Sender) registerSource(mem []byte) (*verbs.MemoryRegion, error) {
	mr, err := s.ep.pd.RegisterMemory(mem, 0)
	if err != nil {
		return nil, fmt.Errorf("rdma: registering the source memory: %w", err)
	}
	return mr, nil
}

// DropSource deregisters what RegisterSource registered, if no Send took it
// (before its memory is unmapped). It must not be called while Send runs.
func (s *Sender) DropSource() {
	if s.pre != nil {
		s.pre.Close()
		s.pre = nil
	}
}

// source provides the local SGE of a chunk's bytes.
type source struct {
	s      *Sender
	file   *os.File
	layout chunk.Layout // when set, the chunk's bytes are read from its extents
	// mem, when set, holds the source from offset base on: registered (mr)
	// and written from, or copied into the staging buffers.
	mem  []byte
	base int64
	mr   *verbs.MemoryRegion
}

// prepareSource readies a Send's source: Register memory is registered (or
// taken from RegisterSource), anything else goes through staging buffers
// for depth chunks, allocated or kept from an earlier Send.
func (s *Sender) prepareSource(from Source, depth int) (*source, error) {
	if from.Layout != nil && (from.File != nil || from.Bytes != nil || from.Register) {
		return nil, errors.New("rdma: Source.Layout does not combine with File, Bytes or Register: a chunk that spans several files is staged by pread from its extents")
	}
	src := &source{s: s, file: from.File, layout: from.Layout, mem: from.Bytes, base: from.Base}
	if from.Register {
		if len(src.mem) == 0 {
			return src, nil
		}
		if pre := s.pre; pre != nil && sameMemory(pre.Bytes(), src.mem) {
			src.mr, s.pre = pre, nil // registered ahead (RegisterSource)
			return src, nil
		}
		s.DropSource()
		var err error
		if src.mr, err = s.registerSource(src.mem); err != nil {
			return nil, err
		}
		return src, nil
	}
	s.DropSource() // registered ahead for a Source that is not this one
	var size int
	for _, b := range s.slots {
		size = max(size, int(b.Len))
	}
	size = (size + 4095) &^ 4095
	// Buffers at least as large as before are kept: a parked sender does
	// not re-register them for a smaller transfer.
	if s.staging == nil || s.bufSize < size || s.staging.Len() < depth*s.bufSize {
		if s.staging != nil {
			s.staging.Close()
			s.staging = nil
		}
		mr, err := s.ep.pd.AllocMemoryRegion(depth*size, 0) // source of WRITEs: local read only
		if err != nil {
			return nil, err
		}
		s.staging, s.bufSize = mr, size
	}
	return src, nil
}

// sameMemory reports whether a and b are the same bytes (not equal ones).
func sameMemory(a, b []byte) bool {
	return len(a) == len(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
}

// sge returns where chunk c's bytes are, putting them into staging buffer
// buf if need be.
func (src *source) sge(buf int, c chunk.Chunk) (verbs.SGE, error) {
	if c.Length == 0 {
		return verbs.SGE{}, nil // nothing to WRITE
	}
	var from []byte
	if src.mem != nil {
		off := c.Offset - src.base
		if off < 0 || off+int64(c.Length) > int64(len(src.mem)) {
			return verbs.SGE{}, fmt.Errorf("range [%d, %d) outside the source's [%d, %d): %w", c.Offset, c.Offset+int64(c.Length),
				src.base, src.base+int64(len(src.mem)), io.ErrUnexpectedEOF)
		}
		if src.mr != nil {
			return src.mr.SGE(int(off), int(c.Length)), nil
		}
		from = src.mem[off : off+int64(c.Length)]
	}
	st := src.s.staging
	off := buf * src.s.bufSize
	b := st.Bytes()[off : off+int(c.Length)]
	if from != nil {
		if err := copyMapped(b, from); err != nil {
			return verbs.SGE{}, err
		}
		return st.SGE(off, int(c.Length)), nil
	}
	if src.layout != nil {
		if err := readExtents(src.layout, c, b); err != nil {
			return verbs.SGE{}, err
		}
		return st.SGE(off, int(c.Length)), nil
	}
	n, err := src.file.ReadAt(b, c.Offset)
	if n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return verbs.SGE{}, err
	}
	return st.SGE(off, int(c.Length)), nil
}

// readExtents fills b, chunk c's staging buffer, by pread from the extents
// l gives for c, in order.
func readExtents(l chunk.Layout, c chunk.Chunk, b []byte) error {
	exts, err := l.Extents(c)
	if err == nil {
		err = chunk.CheckLayout(c, exts)
	}
	if err != nil {
		return fmt.Errorf("the source's layout: %w", err)
	}
	for _, e := range exts {
		if e.Length == 0 {
			continue
		}
		if e.Data != nil {
			b = b[copy(b, e.Data):]
			continue
		}
		n, err := e.File.ReadAt(b[:e.Length], e.Offset)
		if n < int(e.Length) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("reading %d bytes at offset %d: %w", e.Length, e.Offset, err)
		}
		b = b[e.Length:]
	}
	return nil
}

// copyMapped copies from or into a file mapping, turning the fault of a page
// beyond a file that shrank meanwhile (or that the file system could not
// provide: no space) into an error wrapping io.ErrUnexpectedEOF instead of a
// crash.
func copyMapped(dst, src []byte) error {
	return onMapping(func() { copy(dst, src) })
}

// onMapping runs f, which touches a file mapping, turning a fault as
// copyMapped describes into an error.
func onMapping(f func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = fmt.Errorf("a file mapping faulted (%v): %w", r, io.ErrUnexpectedEOF)
		}
	}()
	f()
	return nil
}

// close deregisters source memory registered for the Send.
func (src *source) close() {
	if src.mr != nil {
		src.mr.Close()
	}
}
