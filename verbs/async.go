package verbs

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// AsyncEventType is an ibv_event_type: what an asynchronous event reports.
type AsyncEventType int

// Asynchronous event types (enum ibv_event_type).
const (
	EventCQErr            AsyncEventType = 0
	EventQPFatal          AsyncEventType = 1
	EventQPReqErr         AsyncEventType = 2
	EventQPAccessErr      AsyncEventType = 3
	EventCommEst          AsyncEventType = 4
	EventSQDrained        AsyncEventType = 5
	EventPathMig          AsyncEventType = 6
	EventPathMigErr       AsyncEventType = 7
	EventDeviceFatal      AsyncEventType = 8
	EventPortActive       AsyncEventType = 9
	EventPortErr          AsyncEventType = 10
	EventLIDChange        AsyncEventType = 11
	EventPKeyChange       AsyncEventType = 12
	EventSMChange         AsyncEventType = 13
	EventSRQErr           AsyncEventType = 14
	EventSRQLimit         AsyncEventType = 15
	EventQPLastWQE        AsyncEventType = 16
	EventClientReregister AsyncEventType = 17
	EventGIDChange        AsyncEventType = 18
)

var eventNames = map[AsyncEventType]string{
	EventCQErr: "CQ_ERR", EventQPFatal: "QP_FATAL", EventQPReqErr: "QP_REQ_ERR",
	EventQPAccessErr: "QP_ACCESS_ERR", EventCommEst: "COMM_EST", EventSQDrained: "SQ_DRAINED",
	EventPathMig: "PATH_MIG", EventPathMigErr: "PATH_MIG_ERR", EventDeviceFatal: "DEVICE_FATAL",
	EventPortActive: "PORT_ACTIVE", EventPortErr: "PORT_ERR", EventLIDChange: "LID_CHANGE",
	EventPKeyChange: "PKEY_CHANGE", EventSMChange: "SM_CHANGE", EventSRQErr: "SRQ_ERR",
	EventSRQLimit: "SRQ_LIMIT_REACHED", EventQPLastWQE: "QP_LAST_WQE_REACHED",
	EventClientReregister: "CLIENT_REREGISTER", EventGIDChange: "GID_CHANGE",
}

func (t AsyncEventType) String() string {
	if n, ok := eventNames[t]; ok {
		return "IBV_EVENT_" + n
	}
	return fmt.Sprintf("ibv_event_type(%d)", int(t))
}

// AsyncEvent is one asynchronous event of a device.
type AsyncEvent struct {
	Type AsyncEventType
	QPN  uint32 // the QP a QP event concerns
	Port uint8  // the port a port event concerns
}

func (e AsyncEvent) String() string {
	switch {
	case e.QPN != 0:
		return fmt.Sprintf("%v on QP %#x", e.Type, e.QPN)
	case e.Port != 0:
		return fmt.Sprintf("%v on port %d", e.Type, e.Port)
	}
	return e.Type.String()
}

// AsyncEvents reads a device context's asynchronous events: port state
// changes, QP and CQ errors, fatal device errors. Next sleeps in Go's poller
// (no thread is held). Close it before closing the Context.
//
// Similar to: ibv_get_async_event, ibv_ack_async_event
type AsyncEvents struct {
	c      *Context
	events *eventFD
}

// AsyncEvents starts reading the context's asynchronous events. Events are
// delivered to every reader of the context; one per context is the norm.
func (c *Context) AsyncEvents() (*AsyncEvents, error) {
	h, err := c.handle("ibv_get_async_event")
	if err != nil {
		return nil, err
	}
	fd, err := cAsyncFD(h)
	if err != nil {
		return nil, c.err("ibv_get_async_event", err)
	}
	efd, err := newEventFD(fd, "ibv_async_fd")
	if err != nil {
		return nil, c.err("ibv_get_async_event", err)
	}
	return &AsyncEvents{c: c, events: efd}, nil
}

// Next returns the next event, waiting for one until ctx ends (its error)
// or the reader is closed (an error wrapping ErrClosed).
func (a *AsyncEvents) Next(ctx context.Context) (AsyncEvent, error) {
	var ev AsyncEvent
	err := a.events.wait(ctx, func() error {
		h, err := a.c.handle("ibv_get_async_event")
		if err != nil {
			return err
		}
		ev, err = cGetAsyncEvent(h)
		return err
	})
	switch {
	case err == nil:
		return ev, nil
	case ctx.Err() != nil:
		return AsyncEvent{}, ctx.Err()
	case errors.Is(err, os.ErrClosed):
		return AsyncEvent{}, &Error{Op: "ibv_get_async_event", Device: a.c.name, Err: ErrClosed}
	case errors.As(err, new(*Error)):
		return AsyncEvent{}, err
	}
	return AsyncEvent{}, a.c.err("ibv_get_async_event", err)
}

// Close stops the reader: a Next waiting returns an error wrapping ErrClosed.
func (a *AsyncEvents) Close() error { return a.events.close() }
