package transfer

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/rdma"
)

// Defaults for a Node's Config.
const (
	DefaultChunkSize     = 8 << 20
	MinChunkSize         = 4 << 10
	MaxChunkSize         = 1 << 30
	DefaultMaxConcurrent = 64
	DefaultIdleTimeout   = 60 * time.Second
	maxHistory           = 256 // finished transfers kept for ListTransfers
	maxChunkAttempts     = 3   // sends of one chunk before a checksum failure is final
	maxInFlightAttempts  = 100 // sends of one chunk the destination may answer "in flight elsewhere"
)

// RDMAConfig configures the RDMA transport of a node.
type RDMAConfig struct {
	Options  rdma.Options
	Disabled bool  // never use RDMA
	Slots    int   // registered receive slots per incoming transfer
	Chunk    int64 // chunk (and slot) size when a transfer may use RDMA
	Depth    int   // WRITEs in flight per transfer (shared by its lanes); 0 = rdma's default
	// Lanes is the number of queue pairs a transfer stripes its chunks over
	// (0 = DefaultLanes()). Each lane is a connection of its own with
	// its share of the slots and the depth; a destination takes at most
	// as many lanes as it is configured for.
	Lanes int
	// IdleExpiry is how long a connection to a peer stays parked for reuse
	// after a transfer committed over it (0 = DefaultRDMAIdleExpiry;
	// negative: no reuse, every transfer sets up its own queue pairs).
	IdleExpiry time.Duration
}

// RDMA defaults.
const (
	// DefaultRDMAChunk and DefaultRDMASlots: 4 MiB chunks, four slots (16
	// MiB of staging per incoming transfer): every chunk costs a message, an
	// acknowledgement, completions and wake-ups on both ends, and fewer,
	// larger chunks measured faster (rdma/README.md).
	DefaultRDMASlots = 4
	DefaultRDMALanes = 2 // on hosts with more than one CPU: see DefaultLanes
	MaxRDMALanes     = 16
	DefaultRDMAChunk = 4 << 20
	// DefaultRDMAIdleExpiry is how long an idle queue pair stays parked.
	DefaultRDMAIdleExpiry = 60 * time.Second
)

// DefaultLanes is the number of RDMA lanes a node uses unless configured:
// DefaultRDMALanes, or one on a single-CPU host, where a second lane only
// adds a queue pair to drive (measured in README.md).
func DefaultLanes() int { return min(DefaultRDMALanes, runtime.NumCPU()) }

// Config configures a Node.
type Config struct {
	ID   string
	Root *Root
	// Data is the TCP data-channel listener; nil means this node cannot receive.
	Data *fallback.Listener
	// DataAddr is the data address given to peers; default Data.Addr().
	DataAddr      string
	MaxConcurrent int
	// MaxRegistered caps the bytes of all regions (DefaultMaxRegistered).
	MaxRegistered int64
	ChunkSize     int64
	Streams       int
	SendMode      fallback.SendMode
	// DataEncryption is the node's data-channel encryption policy, as a
	// source and as a destination (EncryptDefault: auto). The Data listener
	// must offer TLS unless it is EncryptOff.
	DataEncryption DataEncryption
	// NoKTLS keeps encrypted data connections this node opens on crypto/tls.
	NoKTLS bool
	// IdleTimeout aborts an incoming transfer that makes no progress for this long.
	IdleTimeout time.Duration
	// FirstByteTimeout aborts an incoming transfer that receives no data
	// this long after Prepare (0 = DefaultFirstByteTimeout; negative: only
	// IdleTimeout applies).
	FirstByteTimeout time.Duration
	// MaxTransfersPerClient caps the incoming transfers one client address
	// has prepared and not finished (0 = DefaultMaxTransfersPerClient;
	// negative: no limit).
	MaxTransfersPerClient int
	// MaxReservedPerClient caps the bytes one client address has reserved
	// on disk with unfinished Prepares (0 = DefaultMaxReservedPerClient;
	// negative: no limit).
	MaxReservedPerClient int64
	// RDMA configures the RDMA transport.
	RDMA RDMAConfig
	// RDMAUnavailable says why this node cannot use RDMA ("" = it can).
	// NewNode fills it in from the device check.
	RDMAUnavailable string
	Logger          *slog.Logger
	// Expect, if not nil, restricts the node to the one incoming transfer
	// it describes (a pull-mode CLI node).
	Expect *Expectation
	// PartialTTL is how long the partial file of a failed copy is kept for
	// a resume (0 = DefaultPartialTTL; negative: until a resume or discard).
	PartialTTL time.Duration
	// Observer, if not nil, is told of transfers and events for metrics.
	Observer Observer
	// TreeMaxEntries and TreeMaxManifestBytes bound a tree's manifest
	// (0 = DefaultTreeMaxEntries, DefaultTreeMaxManifestBytes).
	TreeMaxEntries       int
	TreeMaxManifestBytes int64
}

// Node is one rxfer node's engine: it sends files to peers and receives
// files from them, and keeps the registry of transfers.
type Node struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	transfers map[key]*record
	active    int
	regions   map[string]*region
	quota     clientQuota              // what each client holds of this node
	partials  map[string]*partialEntry // resumable partial files: written now or kept (resume.go)
	sweep     *sweeper                 // the periodic sweep, once started (sweep.go)
	draining  bool                     // no new transfers are admitted (drain.go)
	idle      chan struct{}            // closed when draining and no transfer is active (drain.go)
	trees     map[string]*treeBatches  // tree manifests arriving in batches (tree_recv.go)
	// mapReads bounds the chunks whose CRC32C is being read from a source
	// mapping at once, node-wide, to the CPUs (schedule.go).
	mapReads chan struct{}

	// pool owns the RDMA connections parked between transfers.
	pool *rdma.Pool
}

type key struct {
	dir Direction
	id  string
}

// record is one transfer's mutable state; mu guards info and the incoming fields.
type record struct {
	mu     sync.Mutex
	info   Info
	cancel context.CancelCauseFunc // outgoing: stops the push
	in     *incoming               // incoming only
	// release gives back what the transfer held of its client's limits;
	// finish calls it (nil: nothing held).
	release func()
	// discard: the partial file goes when the transfer ends (cancel
	// --discard), instead of being kept for a resume.
	discard bool
	// peer names the other end (its address or node id) in log lines.
	peer string
	// observed: the Observer was told the transfer started.
	observed bool
}

// NewNode returns a Node with defaults filled in.
func NewNode(cfg Config) *Node {
	cfg.MaxConcurrent = cmp.Or(cfg.MaxConcurrent, DefaultMaxConcurrent)
	cfg.MaxRegistered = cmp.Or(cfg.MaxRegistered, DefaultMaxRegistered)
	cfg.ChunkSize = cmp.Or(cfg.ChunkSize, DefaultChunkSize)
	cfg.Streams = cmp.Or(cfg.Streams, fallback.DefaultStreams)
	cfg.DataEncryption = cmp.Or(cfg.DataEncryption, EncryptAuto)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.FirstByteTimeout = cmp.Or(cfg.FirstByteTimeout, DefaultFirstByteTimeout)
	cfg.MaxTransfersPerClient = cmp.Or(cfg.MaxTransfersPerClient, DefaultMaxTransfersPerClient)
	cfg.MaxReservedPerClient = cmp.Or(cfg.MaxReservedPerClient, DefaultMaxReservedPerClient)
	cfg.RDMA.Slots = cmp.Or(cfg.RDMA.Slots, DefaultRDMASlots)
	cfg.RDMA.Lanes = min(cmp.Or(cfg.RDMA.Lanes, DefaultLanes()), MaxRDMALanes)
	cfg.RDMA.Chunk = cmp.Or(cfg.RDMA.Chunk, DefaultRDMAChunk)
	cfg.RDMA.IdleExpiry = cmp.Or(cfg.RDMA.IdleExpiry, DefaultRDMAIdleExpiry)
	switch {
	case cfg.RDMAUnavailable != "":
	case cfg.RDMA.Disabled:
		cfg.RDMAUnavailable = "RDMA is disabled on this node"
	default:
		if err := rdma.Check(cfg.RDMA.Options); err != nil {
			cfg.RDMAUnavailable = rdma.UnavailableReason(err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Data != nil && cfg.DataAddr == "" {
		cfg.DataAddr = cfg.Data.Addr().String()
	}
	n := &Node{cfg: cfg, log: cfg.Logger, transfers: make(map[key]*record), regions: make(map[string]*region),
		mapReads: make(chan struct{}, runtime.GOMAXPROCS(0)),
		partials: make(map[string]*partialEntry)}
	n.pool = rdma.NewPool(rdma.PoolConfig{Options: cfg.RDMA.Options, IdleExpiry: cfg.RDMA.IdleExpiry, Log: n.log,
		Expired: func(outgoing bool, qpn uint32) {
			if h := knobs.idleRDMAClosed; h != nil {
				h(outgoing, qpn)
			}
		}})
	return n
}

// IdleRDMA returns the number of parked queue pairs: senders (this node as
// a source) and endpoints (as a destination).
func (n *Node) IdleRDMA() (senders, endpoints int) {
	return n.pool.Idle()
}

// DropIdleRDMA closes every parked queue pair and returns how many.
func (n *Node) DropIdleRDMA() int {
	return n.pool.Drop()
}

// Config returns the node's effective configuration.
func (n *Node) Config() Config { return n.cfg }

// NewID returns a random transfer id.
func NewID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// validID reports whether id is safe to embed in a file name.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

// admit registers a new transfer, enforcing the concurrency limit.
func (n *Node) admit(r *record) error {
	if err := n.admitLocked(r); err != nil {
		return err
	}
	r.mu.Lock()
	r.observed = true
	r.mu.Unlock()
	n.cfg.Observer.TransferStarted(r.snapshot) // outside n.mu: the observer may read the node
	return nil
}

func (n *Node) admitLocked(r *record) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.draining {
		return fmt.Errorf("%w: node %s is shutting down and takes no new transfers; retry on another node or once it restarted", ErrDraining, n.cfg.ID)
	}
	k := key{r.info.Direction, r.info.ID}
	if _, dup := n.transfers[k]; dup {
		return fmt.Errorf("%w: transfer %s is already known", ErrExists, r.info.ID)
	}
	if n.active >= n.cfg.MaxConcurrent {
		return fmt.Errorf("%w: node %s already runs %d transfers (limit %d)", ErrTooMany, n.cfg.ID, n.active, n.cfg.MaxConcurrent)
	}
	n.active++
	n.transfers[k] = r
	n.pruneLocked()
	return nil
}

// pruneSlack is how far past maxHistory the finished transfers may grow
// before pruneLocked runs: pruning then drops pruneSlack+1 or more at once,
// so its scan and sort of the whole history happen once every pruneSlack+1
// admissions, not on each one (every admission sorted 256 records'
// snapshots: a third of a destination's CPU during 4 KiB copies).
const pruneSlack = maxHistory / 8

// pruneLocked drops the oldest finished transfers once more than
// maxHistory+pruneSlack of them are kept, down to maxHistory.
func (n *Node) pruneLocked() {
	if len(n.transfers) <= maxHistory+pruneSlack+n.active {
		return
	}
	type aged struct {
		k       key
		started time.Time
	}
	var done []aged
	for k, r := range n.transfers {
		r.mu.Lock() // the two fields only, not a snapshot of the whole Info
		st, started := r.info.State, r.info.Started
		r.mu.Unlock()
		if st.Terminal() {
			done = append(done, aged{k, started})
		}
	}
	slices.SortFunc(done, func(a, b aged) int { return a.started.Compare(b.started) })
	for _, d := range done[:min(len(done), max(0, len(n.transfers)-maxHistory-n.active))] {
		delete(n.transfers, d.k)
	}
}

// finish moves r to a terminal state once; it reports whether it did.
func (n *Node) finish(r *record, st State, err error) bool {
	r.mu.Lock()
	if r.info.State.Terminal() {
		r.mu.Unlock()
		return false
	}
	r.info.State = st
	if err != nil {
		r.info.Err = err.Error()
	}
	release := r.release
	observed := r.observed
	r.mu.Unlock()
	if release != nil {
		release()
	}
	n.mu.Lock()
	n.active--
	idle := n.active == 0
	n.mu.Unlock()
	if observed {
		info := r.snapshot()
		n.cfg.Observer.TransferEnded(info, time.Since(info.Started))
	}
	if idle {
		n.signalIdle()
	}
	return true
}

func (r *record) snapshot() Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	info := r.info
	if info.Result != nil {
		res := *info.Result
		info.Result = &res
	}
	return info
}

func (r *record) setState(s State) {
	r.mu.Lock()
	r.info.State = s
	r.mu.Unlock()
}

// Get returns a transfer by id (outgoing first, when this node is both ends).
func (n *Node) Get(id string) (Info, error) {
	n.mu.Lock()
	r, ok := n.transfers[key{Outgoing, id}]
	if !ok {
		r, ok = n.transfers[key{Incoming, id}]
	}
	n.mu.Unlock()
	if !ok {
		return Info{}, fmt.Errorf("%w: no transfer %q on node %s", ErrNotFound, id, n.cfg.ID)
	}
	return r.snapshot(), nil
}

// List returns every known transfer, newest first, and the kept partial
// files no listed transfer stands for (Resumable).
func (n *Node) List() []Info {
	n.mu.Lock()
	out := make([]Info, 0, len(n.transfers))
	for _, r := range n.transfers {
		out = append(out, r.snapshot())
	}
	n.mu.Unlock()
	out = append(out, n.keptInfos(out)...)
	slices.SortFunc(out, func(a, b Info) int { return b.Started.Compare(a.Started) })
	return out
}

// Active returns the number of transfers in progress.
func (n *Node) Active() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.active
}

// Cancel stops a transfer: an outgoing one stops sending and aborts the
// destination; an incoming one is aborted here. A resumable partial file is
// kept unless discard; with discard, a kept partial file of a transfer that
// already ended is removed too.
func (n *Node) Cancel(id string, discard bool) (Info, error) {
	n.mu.Lock()
	out, okOut := n.transfers[key{Outgoing, id}]
	in, okIn := n.transfers[key{Incoming, id}]
	n.mu.Unlock()
	switch {
	case okOut:
		out.mu.Lock()
		out.discard = out.discard || discard
		out.mu.Unlock()
		out.cancel(fmt.Errorf("%w by request", ErrCanceled))
		return out.snapshot(), nil
	case okIn:
		n.abortIncoming(in, StateCancelled, fmt.Errorf("%w by request on the destination", ErrCanceled), discard)
		if discard {
			n.discardKeptID(id)
		}
		info := in.snapshot()
		info.Resumable = info.Resumable && !discard
		return info, nil
	}
	if info, ok := n.keptInfo(id); ok {
		if discard {
			n.discardKeptID(id)
			info.Resumable = false
		}
		return info, nil
	}
	return Info{}, fmt.Errorf("%w: no transfer %q on node %s", ErrNotFound, id, n.cfg.ID)
}

// LocalPeer returns n as a Peer, for a source and destination in one process.
func (n *Node) LocalPeer() Peer { return localPeer{n} }

type localPeer struct{ *Node }

func (localPeer) Close() error { return nil }

// Shutdown cancels every outgoing transfer and aborts every incoming one
// (keeping a resumable partial file, removing any other), stops the sweep
// and closes the parked queue pairs. Call it when the node stops.
func (n *Node) Shutdown() {
	defer n.pool.Close()
	n.stopSweeper()
	n.mu.Lock()
	recs := make([]*record, 0, len(n.transfers))
	for _, r := range n.transfers {
		recs = append(recs, r)
	}
	n.mu.Unlock()
	for _, r := range recs {
		if r.info.Direction == Outgoing {
			r.cancel(fmt.Errorf("%w: node %s is shutting down", ErrCanceled, n.cfg.ID))
		} else {
			n.abortIncoming(r, StateCancelled, fmt.Errorf("%w: node %s is shutting down", ErrCanceled, n.cfg.ID), false)
		}
	}
}
