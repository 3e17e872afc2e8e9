package transfer

import (
	"context"
	"time"

	"github.com/rxfer/rxfer/rdma"
)

// State is a transfer's place in its life:
// pending → preparing → moving → verifying → committed | failed | cancelled.
type State int

// Transfer states.
const (
	StatePending State = iota + 1
	StatePreparing
	StateMoving
	StateVerifying
	StateCommitted
	StateFailed
	StateCancelled
)

var stateNames = map[State]string{StatePending: "pending", StatePreparing: "preparing", StateMoving: "moving",
	StateVerifying: "verifying", StateCommitted: "committed", StateFailed: "failed", StateCancelled: "cancelled"}

func (s State) String() string { return stateNames[s] }

// Terminal reports whether no further state follows s.
func (s State) Terminal() bool { return s >= StateCommitted }

// Transport names what carries the bytes.
type Transport int

// Transports.
const (
	TransportNone Transport = iota
	TransportTCP
	TransportRDMA
)

func (t Transport) String() string {
	switch t {
	case TransportTCP:
		return "tcp"
	case TransportRDMA:
		return "rdma"
	}
	return "none"
}

// Policy is the transport a request allows.
type Policy int

// Policies.
const (
	PolicyAuto Policy = iota
	PolicyTCP
	PolicyRDMA
)

// Direction tells whether this node sends or receives a transfer.
type Direction int

// Directions.
const (
	Outgoing Direction = iota + 1
	Incoming
)

// Result is what a committed transfer produced.
type Result struct {
	CRC32C    uint32
	FinalPath string
	Duration  time.Duration // from the request to the commit
	// Where Duration went, on the source (zero on the destination): Setup
	// until the destination prepared (partial file, transport, queue
	// pairs), Moving until every chunk was verified, Commit until the
	// destination made the file durable and visible. Admission and
	// bookkeeping are the rest.
	Setup, Moving, Commit time.Duration
}

// Info is a snapshot of one transfer.
type Info struct {
	ID             string
	State          State
	Direction      Direction
	SourcePath     string
	DestNode       string
	DestPath       string
	BytesDone      int64
	BytesTotal     int64
	Rate           float64 // bytes per second while moving
	Transport      Transport
	FallbackReason string
	Err            string
	Result         *Result
	ChunkSize      int64
	Streams        int
	Started        time.Time
	// DataEncryption is how the TCP data connections are protected:
	// "off", "tls" or "ktls" (fallback.Encryption); "" before the first one.
	DataEncryption string
	// Verify is "crc32c" or "crc32c+mac" (VerifyMode).
	Verify string
	// ResumedBytes of BytesDone were not sent: the destination held them,
	// verified, from an earlier copy of the same source.
	ResumedBytes int64
	// ResumeNote says why a copy started over instead of resuming, or
	// that chunks failed their check on disk ("" when neither).
	ResumeNote string
	// Resumable: the transfer ended without committing and its partial
	// file is kept; the same copy again resumes it.
	Resumable bool
	// A tree (PushRequest.Recursive): its regular files and links, those
	// verified so far, the last file completed, and what the source
	// skipped (special files), one line each.
	FilesDone, FilesTotal int64
	CurrentFile           string
	Warnings              []string
	Tree                  bool // the transfer is a directory tree
}

// PrepareRequest is what a source sends the destination before any data.
type PrepareRequest struct {
	// Client is the network address the request came from ("" in-process);
	// the per-client limits count by its host.
	Client     string
	ID         string
	SourceNode string
	SourcePath string
	SourceName string // base name, used when DestPath is a directory
	DestPath   string
	Size       int64
	ChunkSize  int64
	Overwrite  bool
	Policy     Policy
	// DestRegion, when set, makes a window of a region the destination
	// instead of a file; SourceOffset is the source's offset of byte 0.
	DestRegion   *RegionRef
	SourceOffset int64
	// RDMA is the source's queue pairs, one per lane, empty when it cannot
	// use RDMA (RDMAUnavailable says why). Chunks are striped over the
	// lanes the destination takes (a prefix of these, at least one).
	RDMA            []RDMAEndpoint
	RDMAUnavailable string
	// MACKey, when set, asks for the whole-file keyed BLAKE3 (VerifyMAC)
	// that Commit carries.
	MACKey []byte
	// The source's identity beyond its node, path and size, which a
	// partial file must match to be resumed (SourceIdentity).
	SourceMtimeNs    int64
	SourceInode      uint64
	SourceGeneration uint64
	// NoResume: start over (an unnamed partial file, no journal; a kept
	// partial file for the destination is discarded).
	NoResume bool
	// Inline, when set, carries the whole file (at most MaxInlineSize
	// bytes): the destination lands, verifies and commits it within
	// Prepare, which answers with Committed.
	Inline *InlineData
	// Tree, when set, makes the transfer a directory tree (tree.go): Size
	// is the bytes of its files' data ranges, DestPath and SourceName
	// place its root the way cp -r does, or with TreeContents DestPath is
	// the root (SRC/). TreeMore: more batches of the manifest follow in
	// further Prepares of the same ID (the destination answers TreePending
	// until the last).
	Tree         *TreeManifest
	TreeContents bool
	TreeMore     bool
	TreeBatch    int // the batch's number, from 0 (0 starts the manifest over)
}

// The control plane's RDMA types are rdma's own (aliases, so service can
// convert them without importing rdma and nothing is copied field by field).
type (
	// RDMAEndpoint describes one queue pair to the peer.
	RDMAEndpoint = rdma.EndpointInfo
	// RDMABuffer is a registered buffer the peer may write into; its rkey
	// never prints.
	RDMABuffer = rdma.RemoteBuffer
	// RDMADevice is one port of a verbs device as [Devices] reports it.
	RDMADevice = rdma.DeviceStatus
	// RDMAGID is one RoCE v2 GID of a device port.
	RDMAGID = rdma.GIDStatus
)

// RDMAChannel is the destination's RDMA side of one lane: its queue pair
// and the registered slots the source may write into.
type RDMAChannel struct {
	Endpoint RDMAEndpoint
	Slots    []RDMABuffer
	// Direct: the slots are the destination window itself (a region's
	// memory, registered for this transfer only); chunk i must be written
	// into slot i.
	Direct bool
	// Reused: the endpoint is the destination's queue pair that the
	// source's offered one is still connected to (EndpointInfo.ConnectedQPN),
	// resumed with fresh slots; the source keeps its connection as it is.
	// Otherwise the endpoint is a fresh queue pair to connect to.
	Reused bool
}

// TCPChannel is where and how to open the TCP data connections.
type TCPChannel struct {
	Addr  string
	Token []byte
	// CertSHA256 pins the data listener's TLS certificate (nil: no TLS).
	CertSHA256 []byte
	// RequireTLS: the destination refuses plaintext data connections.
	RequireTLS bool
}

// PrepareResponse is the destination's answer to Prepare.
type PrepareResponse struct {
	Transport      Transport
	TCP            TCPChannel    // empty Addr: no TCP (policy RDMA)
	RDMA           []RDMAChannel // a lane for each of the first len(RDMA) offers
	FinalPath      string
	FallbackReason string
	// Resumed are the chunks the destination holds already, verified from
	// disk; the source sends the rest. ResumeNote: as in Info.
	Resumed    []ResumedChunk
	ResumeNote string
	// Committed: the request's inline bytes are verified and committed
	// (nil when the source must send them and Commit as usual).
	Committed *CommitResponse
	// TreePending: a batch of a tree's manifest was taken and more are
	// expected (PrepareRequest.TreeMore); nothing else is set.
	TreePending bool
	// TreeAccepted: the destination prepared the tree (not a file).
	TreeAccepted bool
}

// CommitRequest asks the destination to verify and publish the file.
type CommitRequest struct {
	ID     string
	Size   int64
	CRC32C uint32
	MAC    []byte // the source's whole-file MAC, when Prepare carried a key
}

// CommitResponse confirms a commit.
type CommitResponse struct {
	FinalPath string
	CRC32C    uint32
	// MACVerified: the destination compared the MAC before committing.
	MACVerified bool
}

// Peer is the control channel to a destination node (implemented over gRPC
// by the service layer, or directly by a local [Node]).
type Peer interface {
	Prepare(ctx context.Context, req PrepareRequest) (PrepareResponse, error)
	Commit(ctx context.Context, req CommitRequest) (CommitResponse, error)
	// Abort ends the transfer: the destination keeps a resumable partial
	// file, or with discard removes it.
	Abort(ctx context.Context, id, reason string, discard bool) error
	Close() error
}
