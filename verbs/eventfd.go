package verbs

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// eventFD is a non-blocking duplicate of a libibverbs event file descriptor
// (a completion channel's, a context's async fd), handed to Go's poller: a
// goroutine waiting on it parks without holding a thread or a core.
type eventFD struct {
	file *os.File
	raw  syscall.RawConn
}

// newEventFD takes ownership of fd; it fails (closing fd) if the poller
// cannot wait on it.
func newEventFD(fd int, name string) (*eventFD, error) {
	f := os.NewFile(uintptr(fd), name)
	raw, err := f.SyscallConn()
	if err == nil {
		err = f.SetReadDeadline(time.Time{}) // fails if the fd is not pollable
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &eventFD{file: f, raw: raw}, nil
}

// wait calls take until it returns something other than EAGAIN, parking in
// the poller while the fd has nothing to read. It returns take's error, or
// ctx.Err() once ctx ends, or an error wrapping os.ErrClosed once the fd is
// closed.
func (e *eventFD) wait(ctx context.Context, take func() error) error {
	e.file.SetReadDeadline(time.Time{}) // undo an earlier wait's expiry
	stop := context.AfterFunc(ctx, func() { e.file.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var takeErr error
	read := func(uintptr) bool {
		takeErr = take()
		return !errors.Is(takeErr, syscall.EAGAIN)
	}
	err := e.raw.Read(read)
	for errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil {
		// An earlier wait's expiry that fired late: not ours.
		e.file.SetReadDeadline(time.Time{})
		err = e.raw.Read(read)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return err
	}
	return takeErr
}

func (e *eventFD) close() error { return e.file.Close() }
