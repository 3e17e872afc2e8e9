package verbs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"unsafe"
)

// Devices lists the RDMA devices. It returns an error wrapping [ErrNoDevice]
// when there are none, including on kernels without RDMA support.
//
// Similar to: ibv_devices
func Devices() ([]DeviceInfo, error) { return cDevices() }

// Context is an opened device (struct ibv_context).
type Context struct {
	mu   sync.Mutex
	h    unsafe.Pointer
	name string
}

// Open opens the device with the given name, or the first device if name is
// empty. It returns an error wrapping [ErrNoDevice] if there is no such device.
func Open(name string) (*Context, error) {
	h, dn, err := cOpen(name)
	if err != nil {
		return nil, err
	}
	return &Context{h: h, name: dn}, nil
}

// Name returns the device's name, e.g. "rxe0".
func (c *Context) Name() string { return c.name }

func (c *Context) handle(op string) (unsafe.Pointer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return nil, &Error{Op: op, Device: c.name, Err: ErrClosed}
	}
	return c.h, nil
}

func (c *Context) err(op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Device: c.name, Err: err}
}

// Close closes the device. Close every object made from it first.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.h == nil {
		return nil
	}
	if err := cCloseDevice(c.h); err != nil {
		return c.err("ibv_close_device", err)
	}
	c.h = nil
	return nil
}

// QueryDevice returns the device's attributes and limits.
//
// Similar to: ibv_devinfo -v
func (c *Context) QueryDevice() (DeviceAttr, error) {
	h, err := c.handle("ibv_query_device")
	if err != nil {
		return DeviceAttr{}, err
	}
	a, err := cQueryDevice(h)
	return a, c.err("ibv_query_device", err)
}

// QueryPort returns the attributes of a port (numbered from 1).
//
// Similar to: ibv_devinfo -d DEV -i PORT
func (c *Context) QueryPort(port uint8) (PortAttr, error) {
	h, err := c.handle("ibv_query_port")
	if err != nil {
		return PortAttr{}, err
	}
	a, err := cQueryPort(h, port)
	return a, c.err("ibv_query_port", err)
}

// GIDTable returns the populated GID table entries of a port, with their
// type and network device. On rxe, index 0 is the link-local (fe80::) GID and
// index 1 the IPv4-mapped RoCE v2 GID of the netdev's address.
//
// Similar to: rdma link show; ls /sys/class/infiniband/DEV/ports/PORT/gid_attrs/types/
func (c *Context) GIDTable(port uint8) ([]GIDEntry, error) {
	pa, err := c.QueryPort(port)
	if err != nil {
		return nil, err
	}
	h, err := c.handle("ibv_query_gid_table")
	if err != nil {
		return nil, err
	}
	// The table holds every port's entries: size for all of them.
	da, err := c.QueryDevice()
	if err != nil {
		return nil, err
	}
	t, err := cGIDTable(h, port, pa.GIDTableLen*max(da.PhysPortCount, 1))
	return t, c.err("ibv_query_gid_table", err)
}

// AllocPD allocates a protection domain.
func (c *Context) AllocPD() (*ProtectionDomain, error) {
	h, err := c.handle("ibv_alloc_pd")
	if err != nil {
		return nil, err
	}
	pd, err := cAllocPD(h)
	if err != nil {
		return nil, c.err("ibv_alloc_pd", err)
	}
	return &ProtectionDomain{ctx: c, h: pd}, nil
}

// ProtectionDomain groups the memory regions and queue pairs that may be used
// together (struct ibv_pd). rxfer uses one per peer connection.
type ProtectionDomain struct {
	ctx *Context
	mu  sync.Mutex
	h   unsafe.Pointer
}

// Close deallocates the PD. Close its queue pairs and memory regions first.
func (pd *ProtectionDomain) Close() error {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	if pd.h == nil {
		return nil
	}
	if err := cDeallocPD(pd.h); err != nil {
		return pd.ctx.err("ibv_dealloc_pd", err)
	}
	pd.h = nil
	return nil
}

func (pd *ProtectionDomain) handle(op string) (unsafe.Pointer, error) {
	pd.mu.Lock()
	defer pd.mu.Unlock()
	if pd.h == nil {
		return nil, &Error{Op: op, Device: pd.ctx.name, Err: ErrClosed}
	}
	return pd.h, nil
}

// RegisterMemory registers mem with the given access. mem must be mmap'd
// memory (a [Buffer], a file mapping, ...), never Go heap memory, and must
// stay mapped until the region is closed. A read-only mapping can be
// registered with access 0 (local read only) as the source of WRITEs; on
// Linux 6.1 (the testbed's kernel) map such a file MAP_PRIVATE: a read-only
// MAP_SHARED mapping fails with EFAULT ("bad address").
//
// Similar to: ibv_reg_mr
func (pd *ProtectionDomain) RegisterMemory(mem []byte, access AccessFlags) (*MemoryRegion, error) {
	h, err := pd.handle("ibv_reg_mr")
	if err != nil {
		return nil, err
	}
	if len(mem) == 0 {
		return nil, pd.ctx.err("ibv_reg_mr", syscall.EINVAL)
	}
	mr, lkey, rkey, err := cRegMR(h, mem, access)
	if err != nil {
		return nil, pd.ctx.err("ibv_reg_mr", fmt.Errorf("%d bytes, %v: %w", len(mem), access, err))
	}
	registered[registeredKind(access)].Add(int64(len(mem)))
	return &MemoryRegion{pd: pd, h: mr, mem: mem, lkey: lkey, rkey: rkey, access: access}, nil
}

// AllocMemoryRegion maps a new zeroed [Buffer] of size bytes and registers
// it; closing the region also unmaps the buffer.
func (pd *ProtectionDomain) AllocMemoryRegion(size int, access AccessFlags) (*MemoryRegion, error) {
	buf, err := NewBuffer(size)
	if err != nil {
		return nil, err
	}
	mr, err := pd.RegisterMemory(buf.Bytes(), access)
	if err != nil {
		buf.Close()
		return nil, err
	}
	mr.buf = buf
	return mr, nil
}

// MemoryRegion is registered memory (struct ibv_mr).
type MemoryRegion struct {
	pd         *ProtectionDomain
	mu         sync.Mutex
	h          unsafe.Pointer
	mem        []byte
	buf        *Buffer // owned, when made by AllocMemoryRegion
	lkey, rkey uint32
	access     AccessFlags
}

// Bytes returns the registered memory.
func (mr *MemoryRegion) Bytes() []byte { return mr.mem }

// Addr returns the virtual address of the first byte, as the peer uses it in
// RDMA WRITEs.
func (mr *MemoryRegion) Addr() uint64 {
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mr.mem))))
}

// Len returns the length in bytes.
func (mr *MemoryRegion) Len() int { return len(mr.mem) }

// LKey returns the local key, used in SGEs.
func (mr *MemoryRegion) LKey() uint32 { return mr.lkey }

// RKey returns the remote key: a capability to access the region as its
// access flags allow. Send it only to the peer, over an authenticated channel.
func (mr *MemoryRegion) RKey() uint32 { return mr.rkey }

// Access returns the flags the region was registered with.
func (mr *MemoryRegion) Access() AccessFlags { return mr.access }

// SGE returns the span [off, off+n) of the region as a scatter/gather element.
// It panics if the span is outside the region.
func (mr *MemoryRegion) SGE(off, n int) SGE {
	if off < 0 || n < 0 || off+n > len(mr.mem) {
		panic(fmt.Sprintf("verbs: SGE [%d, %d) outside a region of %d bytes", off, off+n, len(mr.mem)))
	}
	return SGE{Addr: mr.Addr() + uint64(off), Length: uint32(n), LKey: mr.lkey}
}

// Close deregisters the region (and unmaps its buffer if it owns one).
func (mr *MemoryRegion) Close() error {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if mr.h == nil {
		return nil
	}
	if err := cDeregMR(mr.h); err != nil {
		return mr.pd.ctx.err("ibv_dereg_mr", err)
	}
	mr.h = nil
	registered[registeredKind(mr.access)].Add(-int64(len(mr.mem)))
	if mr.buf != nil {
		return mr.buf.Close()
	}
	return nil
}

// CreateCQ creates a completion queue of at least entries entries, with its
// own completion channel for [CompletionQueue.Wait].
//
// Similar to: ibv_create_comp_channel + ibv_create_cq
func (c *Context) CreateCQ(entries int) (*CompletionQueue, error) {
	h, err := c.handle("ibv_create_cq")
	if err != nil {
		return nil, err
	}
	ch, fd, err := cCreateCompChannel(h)
	if err != nil {
		return nil, c.err("ibv_create_comp_channel", err)
	}
	efd, err := newEventFD(fd, "ibv_comp_channel")
	if err != nil {
		cDestroyCompChannel(ch)
		return nil, c.err("ibv_create_comp_channel", err)
	}
	cq, n, err := cCreateCQ(h, entries, ch)
	if err != nil {
		efd.close()
		cDestroyCompChannel(ch)
		return nil, c.err("ibv_create_cq", fmt.Errorf("%d entries: %w", entries, err))
	}
	return &CompletionQueue{
		ctx: c, h: cq, ch: ch, entries: n, events: efd,
		scratch: cAllocScratch(batchSize, wcScratchSize),
	}, nil
}

// CompletionQueue collects work completions (struct ibv_cq) and its
// completion channel. Poll never blocks; Wait sleeps until a completion
// arrives; BusyWait spins for the lowest latency. One goroutine at a time
// should wait on a queue.
type CompletionQueue struct {
	ctx     *Context
	mu      sync.Mutex // guards h and scratch
	h       unsafe.Pointer
	ch      unsafe.Pointer
	entries int
	events  *eventFD // the channel's
	scratch unsafe.Pointer
}

// Entries returns the queue's capacity, which may exceed what was asked for.
func (cq *CompletionQueue) Entries() int { return cq.entries }

// Poll moves up to len(wcs) completions into wcs without blocking and
// returns how many. A failed work request is a completion with a non-success
// status (see [WorkCompletion.Err]), not an error of Poll.
//
// Similar to: ibv_poll_cq
func (cq *CompletionQueue) Poll(wcs []WorkCompletion) (int, error) {
	cq.mu.Lock()
	defer cq.mu.Unlock()
	if cq.h == nil {
		return 0, &Error{Op: "ibv_poll_cq", Device: cq.ctx.name, Err: ErrClosed}
	}
	total := 0
	for total < len(wcs) {
		n, err := cPollCQ(cq.h, cq.scratch, wcs[total:])
		if err != nil {
			return total, cq.ctx.err("ibv_poll_cq", err)
		}
		total += n
		if n < min(len(wcs[total-n:]), batchSize) {
			break // drained
		}
	}
	return total, nil
}

// Wait returns at least one completion, sleeping on the completion channel
// while the queue is empty. Every channel event is acknowledged. It returns
// an error wrapping [ErrTimeout] at ctx's deadline, ctx.Err() if ctx is
// canceled.
//
// Similar to: ibv_req_notify_cq + ibv_get_cq_event + ibv_ack_cq_events
func (cq *CompletionQueue) Wait(ctx context.Context, wcs []WorkCompletion) (int, error) {
	if len(wcs) == 0 {
		return 0, nil
	}
	for {
		if n, err := cq.Poll(wcs); n > 0 || err != nil {
			return n, err
		}
		cq.mu.Lock()
		h := cq.h
		cq.mu.Unlock()
		if h == nil {
			return 0, &Error{Op: "ibv_req_notify_cq", Device: cq.ctx.name, Err: ErrClosed}
		}
		if err := cReqNotifyCQ(h); err != nil {
			return 0, cq.ctx.err("ibv_req_notify_cq", err)
		}
		// A completion that arrived before the notify was armed raises no
		// event: poll once more before sleeping.
		if n, err := cq.Poll(wcs); n > 0 || err != nil {
			return n, err
		}
		if err := cq.waitEvent(ctx); err != nil {
			return 0, err
		}
	}
}

// waitEvent sleeps until the channel has an event, takes and acks it.
func (cq *CompletionQueue) waitEvent(ctx context.Context) error {
	err := cq.events.wait(ctx, func() error {
		got, err := cGetCQEvent(cq.ch)
		if err == nil {
			cAckCQEvents(got, 1)
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return cq.ctx.err("ibv_get_cq_event", fmt.Errorf("%w: %w", ErrTimeout, err))
	case errors.Is(err, context.Canceled):
		return err
	}
	return cq.ctx.err("ibv_get_cq_event", err)
}

// BusyWait returns at least one completion, polling without sleeping: the
// lowest latency and highest throughput, at the cost of a core. It checks ctx
// every few thousand polls.
func (cq *CompletionQueue) BusyWait(ctx context.Context, wcs []WorkCompletion) (int, error) {
	if len(wcs) == 0 {
		return 0, nil
	}
	for i := 0; ; i++ {
		if n, err := cq.Poll(wcs); n > 0 || err != nil {
			return n, err
		}
		if i%4096 == 4095 {
			if err := ctx.Err(); err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return 0, cq.ctx.err("ibv_poll_cq", fmt.Errorf("%w: %w", ErrTimeout, err))
				}
				return 0, err
			}
		}
	}
}

// Close destroys the queue and its channel. Destroy the QPs using it first.
func (cq *CompletionQueue) Close() error {
	cq.mu.Lock()
	defer cq.mu.Unlock()
	if cq.h == nil {
		return nil
	}
	if err := cDestroyCQ(cq.h); err != nil {
		return cq.ctx.err("ibv_destroy_cq", err)
	}
	cq.h = nil
	cq.events.close()
	cFree(cq.scratch)
	cq.scratch = nil
	if err := cDestroyCompChannel(cq.ch); err != nil {
		return cq.ctx.err("ibv_destroy_comp_channel", err)
	}
	return nil
}

// CreateQP creates a reliable-connected queue pair in the RESET state.
//
// Similar to: ibv_create_qp with IBV_QPT_RC
func (pd *ProtectionDomain) CreateQP(cfg QPConfig) (*QueuePair, error) {
	cfg = cfg.withDefaults()
	if cfg.SendCQ == nil || cfg.RecvCQ == nil {
		return nil, pd.ctx.err("ibv_create_qp", fmt.Errorf("%w: SendCQ and RecvCQ are required", syscall.EINVAL))
	}
	h, err := pd.handle("ibv_create_qp")
	if err != nil {
		return nil, err
	}
	scq, rcq := cfg.SendCQ.h, cfg.RecvCQ.h
	if scq == nil || rcq == nil {
		return nil, pd.ctx.err("ibv_create_qp", ErrClosed)
	}
	qp, qpn, inline, err := cCreateQP(h, scq, rcq, cfg)
	if err != nil {
		return nil, pd.ctx.err("ibv_create_qp", err)
	}
	q := &QueuePair{pd: pd, h: qp, qpn: qpn, maxInline: inline,
		sendScratch: make(chan unsafe.Pointer, postConcurrency), recvScratch: make(chan unsafe.Pointer, postConcurrency)}
	for range postConcurrency {
		q.sendScratch <- cAllocScratch(batchSize, sendScratchSize)
		q.recvScratch <- cAllocScratch(batchSize, recvScratchSize)
	}
	return q, nil
}

// postConcurrency is how many PostSend (and PostRecv) calls on one QP run
// at once; more wait for a scratch area.
const postConcurrency = 4

// QueuePair is a reliable-connected queue pair (struct ibv_qp).
type QueuePair struct {
	pd *ProtectionDomain
	// mu guards h: posting holds it shared (posts run concurrently), state
	// changes and Close hold it exclusively.
	mu        sync.RWMutex
	h         unsafe.Pointer
	qpn       uint32
	maxInline int
	// Scratch areas for the C work request arrays, one per concurrent post.
	sendScratch chan unsafe.Pointer
	recvScratch chan unsafe.Pointer
}

// QPN returns the queue pair number.
func (qp *QueuePair) QPN() uint32 { return qp.qpn }

// MaxInline returns how many bytes a work request may carry inline.
func (qp *QueuePair) MaxInline() int { return qp.maxInline }

func (qp *QueuePair) do(op string, f func(h unsafe.Pointer) error) error {
	qp.mu.Lock()
	defer qp.mu.Unlock()
	return qp.call(op, f)
}

// call runs f with the handle (the caller holds mu, shared or not) and
// names op, the device and the QP in its error.
func (qp *QueuePair) call(op string, f func(h unsafe.Pointer) error) error {
	if qp.h == nil {
		return &Error{Op: op, Device: qp.pd.ctx.name, Err: ErrClosed}
	}
	if err := f(qp.h); err != nil {
		return &Error{Op: op, Device: qp.pd.ctx.name, Err: fmt.Errorf("QP %#x: %w", qp.qpn, err)}
	}
	return nil
}

// LocalInfo returns what the peer needs to connect to this QP through the
// given port and GID index, with psn as this side's first send PSN.
func (qp *QueuePair) LocalInfo(port uint8, gidIndex int, psn uint32) (PeerInfo, error) {
	pa, err := qp.pd.ctx.QueryPort(port)
	if err != nil {
		return PeerInfo{}, err
	}
	table, err := qp.pd.ctx.GIDTable(port)
	if err != nil {
		return PeerInfo{}, err
	}
	for _, e := range table {
		if e.Index == gidIndex {
			return PeerInfo{QPN: qp.qpn, PSN: psn & 0xffffff, GID: e.GID, GIDIndex: gidIndex, LID: pa.LID, MTU: pa.ActiveMTU}, nil
		}
	}
	return PeerInfo{}, qp.pd.ctx.err("ibv_query_gid", fmt.Errorf("port %d has no GID at index %d: %w", port, gidIndex, syscall.ENOENT))
}

// Init moves the QP from RESET to INIT on port, allowing the peer access.
func (qp *QueuePair) Init(port uint8, access AccessFlags) error {
	return qp.do("ibv_modify_qp(INIT)", func(h unsafe.Pointer) error { return cQPInit(h, port, access) })
}

// ReadyToReceive moves the QP from INIT to RTR, addressed to peer.
// cfg must already have its defaults (see [QueuePair.Connect]).
func (qp *QueuePair) ReadyToReceive(cfg ConnectConfig, peer PeerInfo) error {
	return qp.do("ibv_modify_qp(RTR)", func(h unsafe.Pointer) error { return cQPRTR(h, cfg, peer) })
}

// ReadyToSend moves the QP from RTR to RTS, sending from PSN cfg.PSN.
func (qp *QueuePair) ReadyToSend(cfg ConnectConfig) error {
	return qp.do("ibv_modify_qp(RTS)", func(h unsafe.Pointer) error { return cQPRTS(h, cfg) })
}

// Connect takes a QP in RESET through INIT and RTR to RTS, connected to
// peer. Zero fields of cfg get defaults: port 1, MTU min(peer, local active),
// hop limit 64, [DefaultTimeout], [DefaultRetryCount], [DefaultRNRRetry],
// [DefaultMinRNRTimer], one
// outstanding RDMA READ. The GRH is always set: RoCE has no LIDs.
func (qp *QueuePair) Connect(cfg ConnectConfig, peer PeerInfo) error {
	port := cfg.Port
	if port == 0 {
		port = 1
	}
	pa, err := qp.pd.ctx.QueryPort(port)
	if err != nil {
		return err
	}
	c := cfg.withDefaults(peer, pa.ActiveMTU)
	if err := qp.Init(c.Port, c.Access); err != nil {
		return err
	}
	if err := qp.ReadyToReceive(c, peer); err != nil {
		return err
	}
	return qp.ReadyToSend(c)
}

// State returns the QP's current state.
//
// Similar to: ibv_query_qp
func (qp *QueuePair) State() (QPState, error) {
	var s QPState
	err := qp.do("ibv_query_qp", func(h unsafe.Pointer) error {
		var err error
		s, err = cQPState(h)
		return err
	})
	return s, err
}

// SetError moves the QP to the error state: outstanding work requests
// complete with WR_FLUSH_ERR.
func (qp *QueuePair) SetError() error {
	return qp.do("ibv_modify_qp(ERR)", func(h unsafe.Pointer) error { return cQPSetState(h, QPStateError) })
}

// Reset moves the QP to RESET from any state, dropping its work requests
// (poll or discard their completions first); it can then be connected again.
func (qp *QueuePair) Reset() error {
	return qp.do("ibv_modify_qp(RESET)", func(h unsafe.Pointer) error { return cQPSetState(h, QPStateReset) })
}

// post runs f with the QP handle and a scratch area from pool, holding mu
// shared: posts may run concurrently with each other, never with a state
// change or Close.
func (qp *QueuePair) post(op string, pool chan unsafe.Pointer, f func(h, scratch unsafe.Pointer) (int, error)) (int, error) {
	qp.mu.RLock()
	defer qp.mu.RUnlock()
	var n int
	err := qp.call(op, func(h unsafe.Pointer) error {
		scratch := <-pool // after the closed check: Close took them all
		defer func() { pool <- scratch }()
		var err error
		n, err = f(h, scratch)
		return err
	})
	return n, err
}

// PostSend posts send work requests in order, in batches of up to 32 per
// call into the provider. On error, the requests before the failing one were
// posted; the error says which one failed.
//
// PostSend may be called from several goroutines at once (up to four calls
// proceed in parallel). That matters with providers that do the protocol
// work inside the call, as rxe does for user QPs: the first caller keeps
// processing while the others queue requests and return, so the send queue
// never runs dry between one caller's calls.
//
// Similar to: ibv_post_send
func (qp *QueuePair) PostSend(wrs ...SendWR) error {
	for done := 0; done < len(wrs); {
		batch := wrs[done:min(len(wrs), done+batchSize)]
		posted, err := qp.post("ibv_post_send", qp.sendScratch, func(h, scratch unsafe.Pointer) (int, error) {
			return cPostSend(h, scratch, batch)
		})
		if err != nil {
			w := batch[posted]
			return fmt.Errorf("work request %#x (%v, %d bytes): %w", w.WRID, w.Opcode, w.Local.Length, err)
		}
		done += posted
	}
	return nil
}

// PostRecv posts receive work requests, like [QueuePair.PostSend].
//
// Similar to: ibv_post_recv
func (qp *QueuePair) PostRecv(wrs ...RecvWR) error {
	for done := 0; done < len(wrs); {
		batch := wrs[done:min(len(wrs), done+batchSize)]
		posted, err := qp.post("ibv_post_recv", qp.recvScratch, func(h, scratch unsafe.Pointer) (int, error) {
			return cPostRecv(h, scratch, batch)
		})
		if err != nil {
			return fmt.Errorf("receive request %#x: %w", batch[posted].WRID, err)
		}
		done += posted
	}
	return nil
}

// Close destroys the QP.
func (qp *QueuePair) Close() error {
	qp.mu.Lock()
	defer qp.mu.Unlock()
	if qp.h == nil {
		return nil
	}
	if err := cDestroyQP(qp.h); err != nil {
		return qp.pd.ctx.err("ibv_destroy_qp", fmt.Errorf("QP %#x: %w", qp.qpn, err))
	}
	qp.h = nil
	// No post holds a scratch area: posts hold mu shared.
	for range postConcurrency {
		cFree(<-qp.sendScratch)
		cFree(<-qp.recvScratch)
	}
	return nil
}
