package fallback

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/chunk"
)

// maxPipe is the pipe size requested for splicing (the default pipe-max-size, so it
// works unprivileged); a larger pipe means fewer splice calls per chunk.
const maxPipe = 1 << 20

// splicePipe is the per-connection pipe that socket → file splicing goes through.
type splicePipe struct {
	r, w int
	size int
}

func newSplicePipe() (*splicePipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("pipe2: %w", err)
	}
	p := &splicePipe{r: fds[0], w: fds[1], size: 64 << 10}
	if n, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, maxPipe); err == nil {
		p.size = n
	}
	return p, nil
}

func (p *splicePipe) Close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// spliceToFile moves exactly n bytes from conn into f at offset off without copying
// them through user space: socket → pipe (waiting on Go's poller when the socket has no
// data) and pipe → file at an explicit offset, so connections never share a file
// position. A read error is returned as is; a write error wraps chunk.ErrReceiverIO so the
// caller can tell "stream broken" from "file broken".
func spliceToFile(conn syscall.Conn, f *os.File, off, n int64, p *splicePipe) error {
	src, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	dst, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%w: %w", chunk.ErrReceiverIO, err)
	}
	for n > 0 {
		inPipe, err := fillPipe(src, p, n)
		if err != nil {
			return err
		}
		n -= int64(inPipe)
		if err := drainPipe(p, dst, &off, inPipe); err != nil {
			return err
		}
	}
	return nil
}

// spliceToExtents is spliceToFile for a chunk whose n bytes go to several
// extents (chunk.ExtentSink; chunk.CheckExtents passed): the pipe is filled
// from the socket as far as the chunk goes, whatever the extents, and
// drained into one extent after the other, so many small files cost few
// socket reads.
func spliceToExtents(conn syscall.Conn, exts []chunk.Extent, n int64, p *splicePipe) error {
	src, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var dst syscall.RawConn // of exts[0], once it has bytes to take
	var off, left int64     // in exts[0]: where its next byte goes, how many it still takes
	for n > 0 {
		inPipe, err := fillPipe(src, p, n)
		if err != nil {
			return err
		}
		n -= int64(inPipe)
		for inPipe > 0 {
			for dst == nil || left == 0 {
				if dst != nil {
					exts = exts[1:]
				}
				if off, left = exts[0].Offset, exts[0].Length; left == 0 {
					dst = nil // a zero-length extent: no file needed
					exts = exts[1:]
					continue
				}
				if dst, err = exts[0].File.SyscallConn(); err != nil {
					return fmt.Errorf("%w: %w", chunk.ErrReceiverIO, err)
				}
			}
			k := int(min(int64(inPipe), left))
			if err := drainPipe(p, dst, &off, k); err != nil {
				return err
			}
			inPipe -= k
			left -= int64(k)
		}
	}
	return nil
}

// fillPipe splices up to n bytes (at most the pipe's size) from the socket
// into the empty pipe, waiting on Go's poller while the socket has none, and
// returns how many it moved (at least 1).
func fillPipe(src syscall.RawConn, p *splicePipe, n int64) (int, error) {
	var inPipe int
	var rerr error
	err := src.Read(func(fd uintptr) bool {
		m, err := unix.Splice(int(fd), nil, p.w, nil, int(min(n, int64(p.size))), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		for err == unix.EINTR {
			m, err = unix.Splice(int(fd), nil, p.w, nil, int(min(n, int64(p.size))), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		}
		switch {
		case err == unix.EAGAIN:
			return false
		case err != nil:
			rerr = os.NewSyscallError("splice", err)
		case m == 0:
			rerr = io.ErrUnexpectedEOF
		}
		inPipe = int(m)
		return true
	})
	if err == nil {
		err = rerr
	}
	return inPipe, err
}

// drainPipe splices k bytes from the pipe into the file dst at *off, which
// it advances. An error wraps chunk.ErrReceiverIO.
func drainPipe(p *splicePipe, dst syscall.RawConn, off *int64, k int) error {
	var werr error
	cerr := dst.Control(func(fd uintptr) {
		for k > 0 {
			m, err := unix.Splice(p.r, nil, int(fd), off, k, unix.SPLICE_F_MOVE)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = os.NewSyscallError("splice", err)
				return
			}
			k -= int(m) // off was advanced by the kernel
		}
	})
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("%w: writing at offset %d: %w", chunk.ErrReceiverIO, *off, werr)
	}
	return nil
}

// writeMore writes b to conn with MSG_MORE, so a chunk header leaves in the same
// segment as the first bytes of the chunk that follows it.
func writeMore(conn *net.TCPConn, b []byte) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for len(b) > 0 {
			m, err := unix.SendmsgN(int(fd), b, nil, nil, unix.MSG_MORE|unix.MSG_NOSIGNAL)
			if err == unix.EAGAIN {
				return false
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = os.NewSyscallError("sendmsg", err)
				return true
			}
			b = b[m:]
		}
		return true
	})
	if err != nil {
		return err
	}
	return werr
}

// errShortSource reports that the source file ended before a chunk did.
var errShortSource = errors.New("source file shorter than chunk")

// sendfileRange sends n bytes of src starting at off with sendfile(2), using an explicit
// offset so that streams sharing src never race on its file position.
func sendfileRange(conn *net.TCPConn, src *os.File, off, n int64) error {
	out, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	in, err := src.SyscallConn()
	if err != nil {
		return err
	}
	var serr, werr error
	cerr := in.Control(func(infd uintptr) {
		werr = out.Write(func(fd uintptr) bool {
			for n > 0 {
				m, err := unix.Sendfile(int(fd), int(infd), &off, int(min(n, 1<<30)))
				if m > 0 {
					n -= int64(m)
				}
				switch {
				case err == unix.EAGAIN:
					return false
				case err == unix.EINTR:
					continue
				case err != nil:
					serr = os.NewSyscallError("sendfile", err)
					return true
				case m == 0:
					serr = errShortSource
					return true
				}
			}
			return true
		})
	})
	for _, e := range []error{werr, serr, cerr} {
		if e != nil {
			return e
		}
	}
	return nil
}

// sendfileExtents is sendfileRange for each extent in turn (a write for
// Data). The socket is corked meanwhile: Go sets TCP_NODELAY, so without
// TCP_CORK every small extent would leave in a segment of its own.
func sendfileExtents(conn *net.TCPConn, exts []chunk.Extent) error {
	if len(exts) > 1 {
		setCork(conn, true)
		defer setCork(conn, false) // sends what the cork held back
	}
	for _, e := range exts {
		if e.Length == 0 {
			continue
		}
		if e.Data != nil {
			if _, err := conn.Write(e.Data); err != nil {
				return err
			}
			continue
		}
		if err := sendfileRange(conn, e.File, e.Offset, e.Length); err != nil {
			return err
		}
	}
	return nil
}

// setCork sets or clears TCP_CORK. A failure only costs segment sizes (and a
// socket that refuses it fails the next send anyway), so it is not reported.
func setCork(conn *net.TCPConn, on bool) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	v := 0
	if on {
		v = 1
	}
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, v) })
}
