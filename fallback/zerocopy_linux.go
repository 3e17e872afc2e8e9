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
		if err != nil {
			return err
		}
		n -= int64(inPipe)
		var werr error
		cerr := dst.Control(func(fd uintptr) {
			for inPipe > 0 {
				m, err := unix.Splice(p.r, nil, int(fd), &off, inPipe, unix.SPLICE_F_MOVE)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					werr = os.NewSyscallError("splice", err)
					return
				}
				inPipe -= int(m) // off was advanced by the kernel
			}
		})
		if werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("%w: writing at offset %d: %w", chunk.ErrReceiverIO, off, werr)
		}
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
