// Package verbs is a thin Go layer over libibverbs, the userspace RDMA verbs
// library: devices, protection domains, memory regions, completion queues and
// reliable-connected (RC) queue pairs, with RDMA WRITE, WRITE_WITH_IMM, SEND
// and RECV.
//
// It is the only package of rxfer that uses cgo. Like Go's net package, the C
// calls sit in one file (verbs_cgo.go, built for linux && cgo) behind small
// shims; the types and logic here are plain Go, and verbs_stub.go makes the
// package build without cgo, every call then failing with [ErrNotSupported].
//
// Objects must be closed child first: [QueuePair], then [MemoryRegion] and
// [CompletionQueue], then [ProtectionDomain], then [Context]. Every Close is
// idempotent.
//
// Memory handed to the device is never Go heap memory: [NewBuffer] maps
// anonymous, page-aligned memory (MADV_DONTFORK), and
// [ProtectionDomain.RegisterMemory] accepts other mmap'd memory, such as a
// read-only file mapping registered with local access only.
//
// Devices in rxfer's tests are Soft-RoCE (rdma_rxe) devices inside the
// testbed VMs (see testbed/README.md). RoCE has no LIDs, so connections are
// addressed by GID and always carry a GRH.
package verbs

import (
	"fmt"
	"net"
	"strings"
)

// GUID is a 64-bit globally unique identifier of a node or port, in host
// order. It prints like ibv_devices does, e.g. 505400fffe770001.
type GUID uint64

// String returns the GUID as 16 hex digits.
func (g GUID) String() string { return fmt.Sprintf("%016x", uint64(g)) }

// Transport is the transport type of a device.
type Transport int

// Transport types (enum ibv_transport_type).
const (
	TransportUnknown     Transport = -1
	TransportIB          Transport = 0 // InfiniBand or RoCE (rxe reports IB)
	TransportIWARP       Transport = 1
	TransportUSNIC       Transport = 2
	TransportUSNICUDP    Transport = 3
	TransportUnspecified Transport = 4
)

// String names the transport like ibv_devinfo does.
func (t Transport) String() string {
	switch t {
	case TransportIB:
		return "InfiniBand"
	case TransportIWARP:
		return "iWARP"
	case TransportUSNIC:
		return "usNIC"
	case TransportUSNICUDP:
		return "usNIC UDP"
	case TransportUnspecified:
		return "unspecified"
	}
	return "unknown"
}

// DeviceInfo describes one RDMA device without opening it.
//
// Similar to: ibv_devices
type DeviceInfo struct {
	Name      string    // kernel name, e.g. "rxe0"
	GUID      GUID      // node GUID
	Transport Transport // transport type
}

// DeviceAttr holds the limits of an opened device.
//
// Similar to: ibv_devinfo -v
type DeviceAttr struct {
	FirmwareVersion string
	NodeGUID        GUID
	VendorID        uint32
	VendorPartID    uint32
	MaxMRSize       uint64 // largest memory region, bytes
	PageSizeCap     uint64
	MaxQP           int
	MaxQPWR         int // work requests per queue
	MaxSGE          int
	MaxCQ           int
	MaxCQE          int
	MaxMR           int
	MaxPD           int
	MaxQPRdAtom     int // outstanding RDMA READ/atomic per QP as target
	MaxQPInitRdAtom int // ... as initiator
	PhysPortCount   int
}

// PortState is the logical state of a port (enum ibv_port_state).
type PortState int

// Port states.
const (
	PortNop         PortState = 0
	PortDown        PortState = 1
	PortInit        PortState = 2
	PortArmed       PortState = 3
	PortActive      PortState = 4
	PortActiveDefer PortState = 5
)

// String names the state like ibv_devinfo does, e.g. "PORT_ACTIVE".
func (s PortState) String() string {
	names := []string{"PORT_NOP", "PORT_DOWN", "PORT_INIT", "PORT_ARMED", "PORT_ACTIVE", "PORT_ACTIVE_DEFER"}
	if s >= 0 && int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("PortState(%d)", int(s))
}

// MTU is a path MTU as the verbs enum ibv_mtu (1 = 256 bytes ... 5 = 4096).
type MTU int

// Path MTUs.
const (
	MTU256  MTU = 1
	MTU512  MTU = 2
	MTU1024 MTU = 3
	MTU2048 MTU = 4
	MTU4096 MTU = 5
)

// Bytes returns the MTU in bytes, or 0 if m is not a valid MTU.
func (m MTU) Bytes() int {
	if m < MTU256 || m > MTU4096 {
		return 0
	}
	return 128 << m
}

// String returns the MTU in bytes, e.g. "4096".
func (m MTU) String() string { return fmt.Sprint(m.Bytes()) }

// LinkLayer is a port's link layer.
type LinkLayer int

// Link layers (IBV_LINK_LAYER_*).
const (
	LinkLayerUnspecified LinkLayer = 0
	LinkLayerInfiniBand  LinkLayer = 1
	LinkLayerEthernet    LinkLayer = 2
)

// String names the link layer like ibv_devinfo does.
func (l LinkLayer) String() string {
	switch l {
	case LinkLayerInfiniBand:
		return "InfiniBand"
	case LinkLayerEthernet:
		return "Ethernet"
	}
	return "Unspecified"
}

// PortAttr holds the attributes of one port.
//
// Similar to: ibv_devinfo -d DEV -i PORT
type PortAttr struct {
	State       PortState
	MaxMTU      MTU
	ActiveMTU   MTU
	LinkLayer   LinkLayer
	GIDTableLen int
	LID         uint16 // 0 on RoCE: address by GID
	MaxMsgSize  uint32
}

// GID is a 128-bit global identifier; on RoCE it is an IPv6 address, or an
// IPv4-mapped one (::ffff:a.b.c.d).
type GID [16]byte

// IP returns the GID as an IP address.
func (g GID) IP() net.IP { return net.IP(g[:]) }

// IsZero reports whether the GID is all zeros (an empty table entry).
func (g GID) IsZero() bool { return g == GID{} }

// String formats the GID as an IP address.
func (g GID) String() string { return g.IP().String() }

// GIDType is the type of a GID table entry (enum ibv_gid_type).
type GIDType int

// GID types.
const (
	GIDTypeIB     GIDType = 0
	GIDTypeRoCEv1 GIDType = 1
	GIDTypeRoCEv2 GIDType = 2
)

// String names the type as sysfs gid_attrs/types does.
func (t GIDType) String() string {
	switch t {
	case GIDTypeIB:
		return "IB"
	case GIDTypeRoCEv1:
		return "RoCE v1"
	case GIDTypeRoCEv2:
		return "RoCE v2"
	}
	return fmt.Sprintf("GIDType(%d)", int(t))
}

// GIDEntry is one populated entry of a port's GID table.
//
// Similar to: show_gids, or /sys/class/infiniband/DEV/ports/PORT/gid_attrs/
type GIDEntry struct {
	Index  int
	GID    GID
	Type   GIDType
	Netdev string // the network device the GID belongs to, e.g. "eth0"
}

// AccessFlags say what a memory region (or a QP's responder) allows.
// Register with the least access a transfer needs: an rkey is a capability.
type AccessFlags uint32

// Access flags (enum ibv_access_flags).
const (
	AccessLocalWrite   AccessFlags = 1 << 0
	AccessRemoteWrite  AccessFlags = 1 << 1 // needs AccessLocalWrite too
	AccessRemoteRead   AccessFlags = 1 << 2
	AccessRemoteAtomic AccessFlags = 1 << 3
)

// String lists the flags, e.g. "LOCAL_WRITE|REMOTE_WRITE".
func (a AccessFlags) String() string {
	var s []string
	for _, f := range []struct {
		f AccessFlags
		n string
	}{{AccessLocalWrite, "LOCAL_WRITE"}, {AccessRemoteWrite, "REMOTE_WRITE"},
		{AccessRemoteRead, "REMOTE_READ"}, {AccessRemoteAtomic, "REMOTE_ATOMIC"}} {
		if a&f.f != 0 {
			s = append(s, f.n)
			a &^= f.f
		}
	}
	if a != 0 {
		s = append(s, fmt.Sprintf("%#x", uint32(a)))
	}
	if len(s) == 0 {
		return "LOCAL_READ"
	}
	return strings.Join(s, "|")
}

// QPState is the state of a queue pair (enum ibv_qp_state).
type QPState int

// Queue pair states.
const (
	QPStateReset QPState = 0
	QPStateInit  QPState = 1
	QPStateRTR   QPState = 2
	QPStateRTS   QPState = 3
	QPStateSQD   QPState = 4
	QPStateSQE   QPState = 5
	QPStateError QPState = 6
)

// String names the state, e.g. "RTS".
func (s QPState) String() string {
	names := []string{"RESET", "INIT", "RTR", "RTS", "SQD", "SQE", "ERR"}
	if s >= 0 && int(s) < len(names) {
		return names[s]
	}
	return fmt.Sprintf("QPState(%d)", int(s))
}

// SendOpcode is the operation of a send work request (enum ibv_wr_opcode).
type SendOpcode int

// Send opcodes.
const (
	OpWrite        SendOpcode = 0
	OpWriteWithImm SendOpcode = 1
	OpSend         SendOpcode = 2
	OpSendWithImm  SendOpcode = 3
	OpRead         SendOpcode = 4
)

// String names the opcode, e.g. "RDMA_WRITE".
func (o SendOpcode) String() string {
	names := []string{"RDMA_WRITE", "RDMA_WRITE_WITH_IMM", "SEND", "SEND_WITH_IMM", "RDMA_READ"}
	if o >= 0 && int(o) < len(names) {
		return names[o]
	}
	return fmt.Sprintf("SendOpcode(%d)", int(o))
}

// WCOpcode is the operation a work completion reports (enum ibv_wc_opcode).
// It is only meaningful for successful completions.
type WCOpcode int

// Work completion opcodes.
const (
	WCSend            WCOpcode = 0
	WCRDMAWrite       WCOpcode = 1
	WCRDMARead        WCOpcode = 2
	WCRecv            WCOpcode = 128
	WCRecvRDMAWithImm WCOpcode = 129
)

// String names the opcode, e.g. "RECV_RDMA_WITH_IMM".
func (o WCOpcode) String() string {
	switch o {
	case WCSend:
		return "SEND"
	case WCRDMAWrite:
		return "RDMA_WRITE"
	case WCRDMARead:
		return "RDMA_READ"
	case WCRecv:
		return "RECV"
	case WCRecvRDMAWithImm:
		return "RECV_RDMA_WITH_IMM"
	}
	return fmt.Sprintf("WCOpcode(%d)", int(o))
}

// SGE is a scatter/gather element: a span of a registered memory region.
type SGE struct {
	Addr   uint64 // virtual address inside the region
	Length uint32
	LKey   uint32
}

// SendWR is a send work request: RDMA WRITE (optionally with immediate data)
// or SEND with a single SGE. It is plain Go: the C work request is built in C.
type SendWR struct {
	WRID       uint64 // returned in the completion; rxfer uses slot indexes
	Opcode     SendOpcode
	Local      SGE    // Length 0 sends nothing (e.g. a bare WRITE_WITH_IMM)
	RemoteAddr uint64 // WRITE/READ only
	RKey       uint32 // WRITE/READ only
	Imm        uint32 // *_WITH_IMM only; delivered in host order
	Signaled   bool   // generate a completion on success (errors always do)
	Inline     bool   // copy the payload into the WR (small payloads only)
}

// RecvWR is a receive work request. Its SGE receives SEND payloads; for
// WRITE_WITH_IMM a zero-length SGE is enough.
type RecvWR struct {
	WRID  uint64
	Local SGE
}

// WorkCompletion is one entry polled from a completion queue.
type WorkCompletion struct {
	WRID      uint64
	Status    WCStatus
	Opcode    WCOpcode // valid only when Status is WCSuccess
	VendorErr uint32
	ByteLen   uint32 // bytes received (receive completions)
	Imm       uint32 // immediate data in host order, when HasImm
	HasImm    bool
	QPN       uint32 // the local QP the work request belonged to
}

// Err returns nil for a successful completion, else a *[CompletionError]
// that names the status and the work request.
func (wc *WorkCompletion) Err() error {
	if wc.Status == WCSuccess {
		return nil
	}
	return &CompletionError{WRID: wc.WRID, QPN: wc.QPN, Status: wc.Status, VendorErr: wc.VendorErr}
}

// PeerInfo is what one side of an RC connection must learn about the other
// to connect its QP. Exchange it over an authenticated control channel.
type PeerInfo struct {
	QPN      uint32 // queue pair number
	PSN      uint32 // first packet sequence number the peer will send (24 bits)
	GID      GID    // the peer's GID ...
	GIDIndex int    // ... and its index in the peer's table (informational)
	LID      uint16 // 0 on RoCE
	MTU      MTU    // the peer port's active MTU
}

// ConnectConfig is the local side of an RC connection. Zero values get
// sensible defaults (see [QueuePair.Connect]).
type ConnectConfig struct {
	Port         uint8       // local port, default 1
	GIDIndex     int         // local GID index used as source (sgid_index)
	PSN          uint32      // first PSN this side sends (24 bits; random in production)
	Access       AccessFlags // what the peer may do to this QP's regions
	MTU          MTU         // default: min(peer MTU, local active MTU)
	HopLimit     uint8       // GRH hop limit, default 64
	TrafficClass uint8
	Timeout      uint8 // local ACK timeout, 4.096 µs * 2^Timeout; default [DefaultTimeout]
	RetryCount   uint8 // transport retries; default [DefaultRetryCount]
	RNRRetry     uint8 // RNR retries (7 = for ever); default [DefaultRNRRetry]
	MinRNRTimer  uint8 // RNR NAK delay code; default [DefaultMinRNRTimer]
	MaxRdAtomic  uint8 // outstanding RDMA READs both ways, default 1
}

// Retry defaults. Both retry counts are finite, so every stalled send queue
// ends in a work completion error: a peer that stops acknowledging fails the
// request with RETRY_EXC_ERR after (DefaultRetryCount+1) × DefaultTimeout
// (~7.5 s), one that stops posting receives with RNR_RETRY_EXC_ERR after
// (DefaultRNRRetry+1) × DefaultMinRNRTimer (~3.4 s).
const (
	// DefaultTimeout is the local ACK timeout exponent: 4.096 µs × 2^18 ≈ 1.07 s
	// (NCCL's default too), so a slow but moving link (rxe in a loaded VM)
	// does not spend its retries on acks that are merely late.
	DefaultTimeout = 18
	// DefaultRetryCount is 6, not the customary 7: rxe treats a transport
	// retry count of 7 like an RNR retry count of 7 and retries for ever, so a
	// vanished peer would never fail a work request.
	DefaultRetryCount = 6
	// DefaultRNRRetry is 6: 7 means "for ever".
	DefaultRNRRetry = 6
	// DefaultMinRNRTimer is the RNR NAK delay code 31 (491.52 ms).
	DefaultMinRNRTimer = 31
)

func (c *ConnectConfig) withDefaults(peer PeerInfo, local MTU) ConnectConfig {
	d := *c
	if d.Port == 0 {
		d.Port = 1
	}
	if d.MTU == 0 {
		d.MTU = local
		if peer.MTU != 0 && peer.MTU < d.MTU {
			d.MTU = peer.MTU
		}
	}
	if d.HopLimit == 0 {
		d.HopLimit = 64
	}
	if d.Timeout == 0 {
		d.Timeout = DefaultTimeout
	}
	if d.RetryCount == 0 {
		d.RetryCount = DefaultRetryCount
	}
	if d.RNRRetry == 0 {
		d.RNRRetry = DefaultRNRRetry
	}
	if d.MinRNRTimer == 0 {
		d.MinRNRTimer = DefaultMinRNRTimer
	}
	if d.MaxRdAtomic == 0 {
		d.MaxRdAtomic = 1
	}
	return d
}

// QPConfig sizes a new RC queue pair.
type QPConfig struct {
	SendCQ, RecvCQ *CompletionQueue // may be the same CQ
	MaxSendWR      int              // default 128
	MaxRecvWR      int              // default 128
	MaxInline      int              // bytes of inline data, default 0
}

func (c QPConfig) withDefaults() QPConfig {
	if c.MaxSendWR == 0 {
		c.MaxSendWR = 128
	}
	if c.MaxRecvWR == 0 {
		c.MaxRecvWR = 128
	}
	return c
}
