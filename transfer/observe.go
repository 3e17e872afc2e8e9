package transfer

import (
	"log/slog"
	"time"
)

// Observer is told what the engine does, for metrics. The service layer
// implements it (with Prometheus); the engine knows nothing of how it is
// exported. Its methods are called without any engine lock held, except
// ChunkVerifyFailed, which must not call back into the Node; all must be
// cheap and safe from any goroutine.
type Observer interface {
	// TransferStarted is told of a transfer the node admitted. info reads
	// its current state (cheap, safe from any goroutine) until it ended.
	TransferStarted(info func() Info)
	// TransferEnded is told once, with the final state, when a transfer
	// that started is committed, failed or cancelled.
	TransferEnded(info Info, elapsed time.Duration)
	// RDMAFailover is told when a source gave up RDMA for TCP: reason is
	// FailoverSetup or FailoverBroken (a bounded set, fit for a label).
	RDMAFailover(reason string)
	// ChunkVerifyFailed is told when a chunk landed here failed its CRC32C.
	ChunkVerifyFailed()
}

// Failover reasons given to Observer.RDMAFailover.
const (
	// FailoverSetup: both ends could use RDMA, but the destination could
	// not set it up for this transfer and chose TCP.
	FailoverSetup = "setup"
	// FailoverBroken: RDMA broke mid-transfer; the rest went over TCP.
	FailoverBroken = "broken"
)

// nopObserver is the Observer of a node configured without one.
type nopObserver struct{}

func (nopObserver) TransferStarted(func() Info)       {}
func (nopObserver) TransferEnded(Info, time.Duration) {}
func (nopObserver) RDMAFailover(string)               {}
func (nopObserver) ChunkVerifyFailed()                {}

// logger returns the logger for lines about transfer r: every line carries
// its id, peer, direction and transport (the transport as it is now).
func (n *Node) logger(r *record) *slog.Logger {
	r.mu.Lock()
	defer r.mu.Unlock()
	return n.loggerLocked(r)
}

// loggerLocked is logger for a caller holding r.mu.
func (n *Node) loggerLocked(r *record) *slog.Logger {
	dir := "outgoing"
	if r.info.Direction == Incoming {
		dir = "incoming"
	}
	return n.log.With("transfer", r.info.ID, "peer", r.peer, "direction", dir, "transport", r.info.Transport.String())
}
