//go:build linux && cgo

package verbs

/*
#cgo LDFLAGS: -libverbs
#include <infiniband/verbs.h>
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

// Flat mirrors of ibv_wc and a send work request: Go reads and writes
// these (in C memory) instead of the verbs structs with their unions and
// pointers, which Go 1.26's cgocheck would reject if they held Go pointers.
struct rx_wc {
	uint64_t wr_id;
	uint32_t status, opcode, vendor_err, byte_len, imm, qp_num, has_imm;
};

struct rx_send {
	uint64_t wr_id, laddr, raddr;
	uint32_t len, lkey, rkey, imm;
	int opcode, flags;
};

struct rx_recv {
	uint64_t wr_id, laddr;
	uint32_t len, lkey;
};

enum { RX_BATCH = 32 };

static int rx_device_info(struct ibv_device *d, uint64_t *guid, int *transport) {
	*guid = be64toh(ibv_get_device_guid(d));
	*transport = d->transport_type;
	return 0;
}

static uint64_t rx_be64(uint64_t v) { return be64toh(v); }

static int rx_query_device(struct ibv_context *ctx, struct ibv_device_attr *a) {
	return ibv_query_device(ctx, a);
}

static int rx_query_port(struct ibv_context *ctx, uint8_t port, struct ibv_port_attr *a) {
	return ibv_query_port(ctx, port, a);
}

static ssize_t rx_query_gid_table(struct ibv_context *ctx, struct ibv_gid_entry *e, size_t n) {
	return ibv_query_gid_table(ctx, e, n, 0);
}

// rx_create_channel makes the completion channel's fd non-blocking and
// returns a close-on-exec duplicate for Go's poller, which then owns it
// (libibverbs owns and closes the original).
static struct ibv_comp_channel *rx_create_channel(struct ibv_context *ctx, int *dupfd) {
	struct ibv_comp_channel *ch = ibv_create_comp_channel(ctx);
	if (!ch)
		return NULL;
	int fl = fcntl(ch->fd, F_GETFL);
	if (fl < 0 || fcntl(ch->fd, F_SETFL, fl | O_NONBLOCK) < 0)
		goto fail;
	*dupfd = fcntl(ch->fd, F_DUPFD_CLOEXEC, 0);
	if (*dupfd < 0)
		goto fail;
	return ch;
fail:;
	int e = errno;
	ibv_destroy_comp_channel(ch);
	errno = e;
	return NULL;
}

// rx_async_fd makes the context's async event fd non-blocking and returns a
// close-on-exec duplicate for Go's poller (libibverbs keeps the original).
static int rx_async_fd(struct ibv_context *ctx) {
	int fl = fcntl(ctx->async_fd, F_GETFL);
	if (fl < 0 || fcntl(ctx->async_fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	return fcntl(ctx->async_fd, F_DUPFD_CLOEXEC, 0);
}

// rx_get_async_event takes and acknowledges one event: its type and the QP
// number or port it concerns. -1 with errno (EAGAIN when none is pending).
static int rx_get_async_event(struct ibv_context *ctx, int *type, uint32_t *qpn, int *port) {
	struct ibv_async_event ev;
	if (ibv_get_async_event(ctx, &ev))
		return -1;
	*type = ev.event_type;
	*qpn = 0;
	*port = 0;
	switch (ev.event_type) {
	case IBV_EVENT_QP_FATAL: case IBV_EVENT_QP_REQ_ERR: case IBV_EVENT_QP_ACCESS_ERR:
	case IBV_EVENT_COMM_EST: case IBV_EVENT_SQ_DRAINED: case IBV_EVENT_PATH_MIG:
	case IBV_EVENT_PATH_MIG_ERR: case IBV_EVENT_QP_LAST_WQE_REACHED:
		*qpn = ev.element.qp->qp_num;
		break;
	case IBV_EVENT_PORT_ACTIVE: case IBV_EVENT_PORT_ERR: case IBV_EVENT_LID_CHANGE:
	case IBV_EVENT_PKEY_CHANGE: case IBV_EVENT_SM_CHANGE: case IBV_EVENT_CLIENT_REREGISTER:
	case IBV_EVENT_GID_CHANGE:
		*port = ev.element.port_num;
		break;
	default:
		break;
	}
	ibv_ack_async_event(&ev);
	return 0;
}

// The Go constants of AsyncEventType are these values.
_Static_assert(IBV_EVENT_CQ_ERR == 0 && IBV_EVENT_QP_FATAL == 1 && IBV_EVENT_QP_REQ_ERR == 2 &&
	IBV_EVENT_QP_ACCESS_ERR == 3 && IBV_EVENT_DEVICE_FATAL == 8 && IBV_EVENT_PORT_ACTIVE == 9 &&
	IBV_EVENT_PORT_ERR == 10 && IBV_EVENT_GID_CHANGE == 18, "ibv_event_type values");

static int rx_req_notify(struct ibv_cq *cq) { return ibv_req_notify_cq(cq, 0); }

// rx_get_cq_event returns 0 and the CQ of one event, or -1 with errno
// (EAGAIN when none is pending).
static int rx_get_cq_event(struct ibv_comp_channel *ch, struct ibv_cq **cq) {
	void *cq_ctx;
	return ibv_get_cq_event(ch, cq, &cq_ctx);
}

static int rx_poll_cq(struct ibv_cq *cq, struct rx_wc *out, int n) {
	struct ibv_wc wc[RX_BATCH];
	if (n > RX_BATCH)
		n = RX_BATCH;
	int got = ibv_poll_cq(cq, n, wc);
	for (int i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id;
		out[i].status = wc[i].status;
		out[i].opcode = wc[i].opcode;
		out[i].vendor_err = wc[i].vendor_err;
		out[i].byte_len = wc[i].byte_len;
		out[i].has_imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) != 0;
		out[i].imm = out[i].has_imm ? ntohl(wc[i].imm_data) : 0;
		out[i].qp_num = wc[i].qp_num;
	}
	return got;
}

static struct ibv_qp *rx_create_qp(struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq,
		uint32_t max_send, uint32_t max_recv, uint32_t max_inline, uint32_t *out_inline) {
	struct ibv_qp_init_attr a;
	memset(&a, 0, sizeof a);
	a.send_cq = scq;
	a.recv_cq = rcq;
	a.qp_type = IBV_QPT_RC;
	a.sq_sig_all = 0;
	a.cap.max_send_wr = max_send;
	a.cap.max_recv_wr = max_recv;
	a.cap.max_send_sge = 1;
	a.cap.max_recv_sge = 1;
	a.cap.max_inline_data = max_inline;
	struct ibv_qp *qp = ibv_create_qp(pd, &a);
	if (qp)
		*out_inline = a.cap.max_inline_data;
	return qp;
}

static int rx_qp_init(struct ibv_qp *qp, uint8_t port, int access) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = port;
	a.qp_access_flags = access;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

static int rx_qp_rtr(struct ibv_qp *qp, uint8_t port, int mtu, uint32_t dest_qpn, uint32_t rq_psn,
		uint8_t max_dest_rd_atomic, uint8_t min_rnr_timer, uint16_t dlid, const uint8_t *dgid,
		uint8_t sgid_index, uint8_t hop_limit, uint8_t tclass) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = mtu;
	a.dest_qp_num = dest_qpn;
	a.rq_psn = rq_psn;
	a.max_dest_rd_atomic = max_dest_rd_atomic;
	a.min_rnr_timer = min_rnr_timer;
	a.ah_attr.dlid = dlid;
	a.ah_attr.port_num = port;
	// RoCE (and so rxe) has no LIDs: address the peer by GID, in a GRH.
	a.ah_attr.is_global = 1;
	memcpy(a.ah_attr.grh.dgid.raw, dgid, 16);
	a.ah_attr.grh.sgid_index = sgid_index;
	a.ah_attr.grh.hop_limit = hop_limit;
	a.ah_attr.grh.traffic_class = tclass;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
		IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
}

static int rx_qp_rts(struct ibv_qp *qp, uint32_t sq_psn, uint8_t timeout, uint8_t retry_cnt,
		uint8_t rnr_retry, uint8_t max_rd_atomic) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = sq_psn;
	a.timeout = timeout;
	a.retry_cnt = retry_cnt;
	a.rnr_retry = rnr_retry;
	a.max_rd_atomic = max_rd_atomic;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT |
		IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC);
}

static int rx_qp_set_state(struct ibv_qp *qp, int state) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = state;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE);
}

static int rx_qp_state(struct ibv_qp *qp, int *state) {
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;
	int rc = ibv_query_qp(qp, &a, IBV_QP_STATE, &ia);
	if (rc == 0)
		*state = a.qp_state;
	return rc;
}

// rx_post_send chains n (<= RX_BATCH) flat requests into ibv_send_wr on the
// C stack and posts them with one call. On failure *bad is the index of the
// first request not posted.
static int rx_post_send(struct ibv_qp *qp, const struct rx_send *s, int n, int *bad) {
	struct ibv_send_wr wr[RX_BATCH];
	struct ibv_sge sge[RX_BATCH];
	if (n > RX_BATCH)
		return EINVAL;
	memset(wr, 0, sizeof(wr[0]) * n);
	for (int i = 0; i < n; i++) {
		sge[i].addr = s[i].laddr;
		sge[i].length = s[i].len;
		sge[i].lkey = s[i].lkey;
		wr[i].wr_id = s[i].wr_id;
		wr[i].sg_list = s[i].len ? &sge[i] : NULL;
		wr[i].num_sge = s[i].len ? 1 : 0;
		wr[i].opcode = s[i].opcode;
		wr[i].send_flags = s[i].flags;
		if (s[i].opcode == IBV_WR_RDMA_WRITE_WITH_IMM || s[i].opcode == IBV_WR_SEND_WITH_IMM)
			wr[i].imm_data = htonl(s[i].imm);
		wr[i].wr.rdma.remote_addr = s[i].raddr;
		wr[i].wr.rdma.rkey = s[i].rkey;
		wr[i].next = i + 1 < n ? &wr[i + 1] : NULL;
	}
	struct ibv_send_wr *b = NULL;
	int rc = ibv_post_send(qp, wr, &b);
	*bad = rc && b ? (int)(b - wr) : 0;
	return rc;
}

static int rx_post_recv(struct ibv_qp *qp, const struct rx_recv *r, int n, int *bad) {
	struct ibv_recv_wr wr[RX_BATCH];
	struct ibv_sge sge[RX_BATCH];
	if (n > RX_BATCH)
		return EINVAL;
	memset(wr, 0, sizeof(wr[0]) * n);
	for (int i = 0; i < n; i++) {
		sge[i].addr = r[i].laddr;
		sge[i].length = r[i].len;
		sge[i].lkey = r[i].lkey;
		wr[i].wr_id = r[i].wr_id;
		wr[i].sg_list = r[i].len ? &sge[i] : NULL;
		wr[i].num_sge = r[i].len ? 1 : 0;
		wr[i].next = i + 1 < n ? &wr[i + 1] : NULL;
	}
	struct ibv_recv_wr *b = NULL;
	int rc = ibv_post_recv(qp, wr, &b);
	*bad = rc && b ? (int)(b - wr) : 0;
	return rc;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"
)

// The Go constants in verbs.go and errors.go are the C enum values; these
// fail to compile (constant index out of range) if one ever differs.
var (
	_ = [1]int{}[int(WCRemAccessErr)-int(C.IBV_WC_REM_ACCESS_ERR)]
	_ = [1]int{}[int(WCTMRndvIncomplete)-int(C.IBV_WC_TM_RNDV_INCOMPLETE)]
	_ = [1]int{}[int(WCRecvRDMAWithImm)-int(C.IBV_WC_RECV_RDMA_WITH_IMM)]
	_ = [1]int{}[int(OpRead)-int(C.IBV_WR_RDMA_READ)]
	_ = [1]int{}[int(OpWriteWithImm)-int(C.IBV_WR_RDMA_WRITE_WITH_IMM)]
	_ = [1]int{}[int(QPStateError)-int(C.IBV_QPS_ERR)]
	_ = [1]int{}[int(AccessRemoteAtomic)-int(C.IBV_ACCESS_REMOTE_ATOMIC)]
	_ = [1]int{}[int(MTU4096)-int(C.IBV_MTU_4096)]
	_ = [1]int{}[int(PortActive)-int(C.IBV_PORT_ACTIVE)]
	_ = [1]int{}[int(GIDTypeRoCEv2)-int(C.IBV_GID_TYPE_ROCE_V2)]
	_ = [1]int{}[int(LinkLayerEthernet)-int(C.IBV_LINK_LAYER_ETHERNET)]
	_ = [1]int{}[int(TransportIWARP)-int(C.IBV_TRANSPORT_IWARP)]
	_ = [1]int{}[batchSize-int(C.RX_BATCH)]
)

// batchSize is how many work requests one C call posts or polls.
const batchSize = 32

// errnoOf turns a verbs return code (0 or an errno value) into an error.
func errnoOf(rc C.int) error {
	if rc == 0 {
		return nil
	}
	if rc < 0 { // some providers return -errno
		rc = -rc
	}
	return syscall.Errno(rc)
}

// orErrno returns err, or EIO if a call reported failure without errno.
func orErrno(err error) error {
	if err == nil {
		return syscall.EIO
	}
	return err
}

func cDevices() ([]DeviceInfo, error) {
	var n C.int
	list, err := C.ibv_get_device_list(&n)
	if list == nil {
		if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.ENOENT) {
			// No RDMA in this kernel (or no uverbs devices at all).
			return nil, &Error{Op: "ibv_get_device_list", Err: fmt.Errorf("%w: %w", ErrNoDevice, err)}
		}
		return nil, &Error{Op: "ibv_get_device_list", Err: orErrno(err)}
	}
	defer C.ibv_free_device_list(list)
	devs := unsafe.Slice(list, int(n))
	out := make([]DeviceInfo, 0, len(devs))
	for _, d := range devs {
		var guid C.uint64_t
		var tr C.int
		C.rx_device_info(d, &guid, &tr)
		out = append(out, DeviceInfo{
			Name:      C.GoString(C.ibv_get_device_name(d)),
			GUID:      GUID(guid),
			Transport: Transport(tr),
		})
	}
	if len(out) == 0 {
		return nil, &Error{Op: "ibv_get_device_list", Err: ErrNoDevice}
	}
	return out, nil
}

func cOpen(name string) (unsafe.Pointer, string, error) {
	var n C.int
	list, err := C.ibv_get_device_list(&n)
	if list == nil {
		if errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.ENOENT) {
			return nil, "", &Error{Op: "ibv_get_device_list", Device: name, Err: fmt.Errorf("%w: %w", ErrNoDevice, err)}
		}
		return nil, "", &Error{Op: "ibv_get_device_list", Device: name, Err: orErrno(err)}
	}
	defer C.ibv_free_device_list(list)
	for _, d := range unsafe.Slice(list, int(n)) {
		dn := C.GoString(C.ibv_get_device_name(d))
		if name != "" && dn != name {
			continue
		}
		ctx, err := C.ibv_open_device(d)
		if ctx == nil {
			return nil, dn, &Error{Op: "ibv_open_device", Device: dn, Err: orErrno(err)}
		}
		return unsafe.Pointer(ctx), dn, nil
	}
	return nil, "", &Error{Op: "ibv_open_device", Device: name, Err: ErrNoDevice}
}

func cCloseDevice(h unsafe.Pointer) error {
	return errnoOf(C.ibv_close_device((*C.struct_ibv_context)(h)))
}

func cQueryDevice(h unsafe.Pointer) (DeviceAttr, error) {
	var a C.struct_ibv_device_attr
	if err := errnoOf(C.rx_query_device((*C.struct_ibv_context)(h), &a)); err != nil {
		return DeviceAttr{}, err
	}
	return DeviceAttr{
		FirmwareVersion: C.GoString(&a.fw_ver[0]),
		NodeGUID:        GUID(C.rx_be64(C.uint64_t(a.node_guid))),
		VendorID:        uint32(a.vendor_id),
		VendorPartID:    uint32(a.vendor_part_id),
		MaxMRSize:       uint64(a.max_mr_size),
		PageSizeCap:     uint64(a.page_size_cap),
		MaxQP:           int(a.max_qp),
		MaxQPWR:         int(a.max_qp_wr),
		MaxSGE:          int(a.max_sge),
		MaxCQ:           int(a.max_cq),
		MaxCQE:          int(a.max_cqe),
		MaxMR:           int(a.max_mr),
		MaxPD:           int(a.max_pd),
		MaxQPRdAtom:     int(a.max_qp_rd_atom),
		MaxQPInitRdAtom: int(a.max_qp_init_rd_atom),
		PhysPortCount:   int(a.phys_port_cnt),
	}, nil
}

func cQueryPort(h unsafe.Pointer, port uint8) (PortAttr, error) {
	var a C.struct_ibv_port_attr
	if err := errnoOf(C.rx_query_port((*C.struct_ibv_context)(h), C.uint8_t(port), &a)); err != nil {
		return PortAttr{}, err
	}
	return PortAttr{
		State:       PortState(a.state),
		MaxMTU:      MTU(a.max_mtu),
		ActiveMTU:   MTU(a.active_mtu),
		LinkLayer:   LinkLayer(a.link_layer),
		GIDTableLen: int(a.gid_tbl_len),
		LID:         uint16(a.lid),
		MaxMsgSize:  uint32(a.max_msg_sz),
	}, nil
}

func cGIDTable(h unsafe.Pointer, port uint8, max int) ([]GIDEntry, error) {
	if max <= 0 {
		return nil, nil
	}
	entries := (*C.struct_ibv_gid_entry)(C.calloc(C.size_t(max), C.sizeof_struct_ibv_gid_entry))
	if entries == nil {
		return nil, syscall.ENOMEM
	}
	defer C.free(unsafe.Pointer(entries))
	n, err := C.rx_query_gid_table((*C.struct_ibv_context)(h), entries, C.size_t(max))
	if n < 0 {
		return nil, orErrno(err)
	}
	var out []GIDEntry
	for _, e := range unsafe.Slice(entries, int(n)) {
		if uint8(e.port_num) != port {
			continue
		}
		g := GIDEntry{Index: int(e.gid_index), Type: GIDType(e.gid_type)}
		g.GID = *(*GID)(unsafe.Pointer(&e.gid))
		if ifi, err := net.InterfaceByIndex(int(e.ndev_ifindex)); err == nil {
			g.Netdev = ifi.Name
		}
		out = append(out, g)
	}
	return out, nil
}

func cAllocPD(h unsafe.Pointer) (unsafe.Pointer, error) {
	pd, err := C.ibv_alloc_pd((*C.struct_ibv_context)(h))
	if pd == nil {
		return nil, orErrno(err)
	}
	return unsafe.Pointer(pd), nil
}

func cDeallocPD(pd unsafe.Pointer) error {
	return errnoOf(C.ibv_dealloc_pd((*C.struct_ibv_pd)(pd)))
}

// cRegMR registers mem, which must not be Go heap memory (the device keeps
// using it after the call returns).
func cRegMR(pd unsafe.Pointer, mem []byte, access AccessFlags) (unsafe.Pointer, uint32, uint32, error) {
	mr, err := C.ibv_reg_mr((*C.struct_ibv_pd)(pd), unsafe.Pointer(unsafe.SliceData(mem)), C.size_t(len(mem)), C.int(access))
	if mr == nil {
		return nil, 0, 0, orErrno(err)
	}
	return unsafe.Pointer(mr), uint32(mr.lkey), uint32(mr.rkey), nil
}

func cDeregMR(mr unsafe.Pointer) error {
	return errnoOf(C.ibv_dereg_mr((*C.struct_ibv_mr)(mr)))
}

func cCreateCompChannel(h unsafe.Pointer) (unsafe.Pointer, int, error) {
	var fd C.int
	ch, err := C.rx_create_channel((*C.struct_ibv_context)(h), &fd)
	if ch == nil {
		return nil, -1, orErrno(err)
	}
	return unsafe.Pointer(ch), int(fd), nil
}

func cDestroyCompChannel(ch unsafe.Pointer) error {
	return errnoOf(C.ibv_destroy_comp_channel((*C.struct_ibv_comp_channel)(ch)))
}

func cCreateCQ(h unsafe.Pointer, entries int, ch unsafe.Pointer) (unsafe.Pointer, int, error) {
	cq, err := C.ibv_create_cq((*C.struct_ibv_context)(h), C.int(entries), nil, (*C.struct_ibv_comp_channel)(ch), 0)
	if cq == nil {
		return nil, 0, orErrno(err)
	}
	return unsafe.Pointer(cq), int(cq.cqe), nil
}

func cDestroyCQ(cq unsafe.Pointer) error {
	return errnoOf(C.ibv_destroy_cq((*C.struct_ibv_cq)(cq)))
}

func cReqNotifyCQ(cq unsafe.Pointer) error {
	return errnoOf(C.rx_req_notify((*C.struct_ibv_cq)(cq)))
}

// cGetCQEvent takes one event from the channel; syscall.EAGAIN if none.
func cGetCQEvent(ch unsafe.Pointer) (unsafe.Pointer, error) {
	var cq *C.struct_ibv_cq
	rc, err := C.rx_get_cq_event((*C.struct_ibv_comp_channel)(ch), &cq)
	if rc != 0 {
		return nil, orErrno(err)
	}
	return unsafe.Pointer(cq), nil
}

func cAckCQEvents(cq unsafe.Pointer, n int) {
	C.ibv_ack_cq_events((*C.struct_ibv_cq)(cq), C.uint(n))
}

func cAllocScratch(n, size int) unsafe.Pointer { return C.calloc(C.size_t(n), C.size_t(size)) }

func cFree(p unsafe.Pointer) { C.free(p) }

const wcScratchSize = C.sizeof_struct_rx_wc

func cPollCQ(cq, scratch unsafe.Pointer, wcs []WorkCompletion) (int, error) {
	n := min(len(wcs), batchSize)
	got := int(C.rx_poll_cq((*C.struct_ibv_cq)(cq), (*C.struct_rx_wc)(scratch), C.int(n)))
	if got < 0 {
		return 0, syscall.EIO
	}
	for i, w := range unsafe.Slice((*C.struct_rx_wc)(scratch), got) {
		wcs[i] = WorkCompletion{
			WRID:      uint64(w.wr_id),
			Status:    WCStatus(w.status),
			Opcode:    WCOpcode(w.opcode),
			VendorErr: uint32(w.vendor_err),
			ByteLen:   uint32(w.byte_len),
			Imm:       uint32(w.imm),
			HasImm:    w.has_imm != 0,
			QPN:       uint32(w.qp_num),
		}
	}
	return got, nil
}

func cCreateQP(pd, scq, rcq unsafe.Pointer, c QPConfig) (unsafe.Pointer, uint32, int, error) {
	var inline C.uint32_t
	qp, err := C.rx_create_qp((*C.struct_ibv_pd)(pd), (*C.struct_ibv_cq)(scq), (*C.struct_ibv_cq)(rcq),
		C.uint32_t(c.MaxSendWR), C.uint32_t(c.MaxRecvWR), C.uint32_t(c.MaxInline), &inline)
	if qp == nil {
		return nil, 0, 0, orErrno(err)
	}
	return unsafe.Pointer(qp), uint32(qp.qp_num), int(inline), nil
}

func cDestroyQP(qp unsafe.Pointer) error {
	return errnoOf(C.ibv_destroy_qp((*C.struct_ibv_qp)(qp)))
}

func cQPInit(qp unsafe.Pointer, port uint8, access AccessFlags) error {
	return errnoOf(C.rx_qp_init((*C.struct_ibv_qp)(qp), C.uint8_t(port), C.int(access)))
}

func cQPRTR(qp unsafe.Pointer, c ConnectConfig, peer PeerInfo) error {
	gid := peer.GID // a Go array without pointers: fine to lend to C for the call
	return errnoOf(C.rx_qp_rtr((*C.struct_ibv_qp)(qp), C.uint8_t(c.Port), C.int(c.MTU),
		C.uint32_t(peer.QPN), C.uint32_t(peer.PSN&0xffffff), C.uint8_t(c.MaxRdAtomic), C.uint8_t(c.MinRNRTimer),
		C.uint16_t(peer.LID), (*C.uint8_t)(unsafe.Pointer(&gid[0])), C.uint8_t(c.GIDIndex),
		C.uint8_t(c.HopLimit), C.uint8_t(c.TrafficClass)))
}

func cQPRTS(qp unsafe.Pointer, c ConnectConfig) error {
	return errnoOf(C.rx_qp_rts((*C.struct_ibv_qp)(qp), C.uint32_t(c.PSN&0xffffff), C.uint8_t(c.Timeout),
		C.uint8_t(c.RetryCount), C.uint8_t(c.RNRRetry), C.uint8_t(c.MaxRdAtomic)))
}

func cQPSetState(qp unsafe.Pointer, s QPState) error {
	return errnoOf(C.rx_qp_set_state((*C.struct_ibv_qp)(qp), C.int(s)))
}

func cQPState(qp unsafe.Pointer) (QPState, error) {
	var s C.int
	if err := errnoOf(C.rx_qp_state((*C.struct_ibv_qp)(qp), &s)); err != nil {
		return 0, err
	}
	return QPState(s), nil
}

const (
	sendScratchSize = C.sizeof_struct_rx_send
	recvScratchSize = C.sizeof_struct_rx_recv
)

// cPostSend posts up to batchSize requests; on error it returns how many
// were posted before the failing one.
func cPostSend(qp, scratch unsafe.Pointer, wrs []SendWR) (int, error) {
	s := unsafe.Slice((*C.struct_rx_send)(scratch), len(wrs))
	for i, w := range wrs {
		flags := C.int(0)
		if w.Signaled {
			flags |= C.IBV_SEND_SIGNALED
		}
		if w.Inline {
			flags |= C.IBV_SEND_INLINE
		}
		s[i] = C.struct_rx_send{
			wr_id: C.uint64_t(w.WRID), laddr: C.uint64_t(w.Local.Addr), raddr: C.uint64_t(w.RemoteAddr),
			len: C.uint32_t(w.Local.Length), lkey: C.uint32_t(w.Local.LKey), rkey: C.uint32_t(w.RKey),
			imm: C.uint32_t(w.Imm), opcode: C.int(w.Opcode), flags: flags,
		}
	}
	var bad C.int
	if err := errnoOf(C.rx_post_send((*C.struct_ibv_qp)(qp), &s[0], C.int(len(wrs)), &bad)); err != nil {
		return int(bad), err
	}
	return len(wrs), nil
}

func cPostRecv(qp, scratch unsafe.Pointer, wrs []RecvWR) (int, error) {
	r := unsafe.Slice((*C.struct_rx_recv)(scratch), len(wrs))
	for i, w := range wrs {
		r[i] = C.struct_rx_recv{wr_id: C.uint64_t(w.WRID), laddr: C.uint64_t(w.Local.Addr),
			len: C.uint32_t(w.Local.Length), lkey: C.uint32_t(w.Local.LKey)}
	}
	var bad C.int
	if err := errnoOf(C.rx_post_recv((*C.struct_ibv_qp)(qp), &r[0], C.int(len(wrs)), &bad)); err != nil {
		return int(bad), err
	}
	return len(wrs), nil
}

func cAsyncFD(h unsafe.Pointer) (int, error) {
	fd, err := C.rx_async_fd((*C.struct_ibv_context)(h))
	if fd < 0 {
		return -1, orErrno(err)
	}
	return int(fd), nil
}

// cGetAsyncEvent takes one async event; syscall.EAGAIN if none.
func cGetAsyncEvent(h unsafe.Pointer) (AsyncEvent, error) {
	var typ, port C.int
	var qpn C.uint32_t
	rc, err := C.rx_get_async_event((*C.struct_ibv_context)(h), &typ, &qpn, &port)
	if rc != 0 {
		return AsyncEvent{}, orErrno(err)
	}
	return AsyncEvent{Type: AsyncEventType(typ), QPN: uint32(qpn), Port: uint8(port)}, nil
}
