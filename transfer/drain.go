package transfer

import (
	"context"
	"fmt"
)

// ErrDraining: the node is shutting down gracefully and admits no new
// transfer. It is an ErrPeerUnavailable (gRPC Unavailable): the caller may
// retry elsewhere or later.
var ErrDraining = fmt.Errorf("%w: node is draining", ErrPeerUnavailable)

// Drain stops admitting new transfers (they fail with ErrDraining) and
// waits until every active transfer has ended, or ctx is done (its error is
// returned; the transfers go on until Shutdown). Draining is one-way.
func (n *Node) Drain(ctx context.Context) error {
	n.mu.Lock()
	n.draining = true
	if n.idle == nil {
		n.idle = make(chan struct{})
		if n.active == 0 {
			close(n.idle)
		}
	}
	idle := n.idle
	n.mu.Unlock()
	select {
	case <-idle: // already idle: not a timeout, however short ctx was
		return nil
	default:
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Draining reports whether Drain was called.
func (n *Node) Draining() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.draining
}

// signalIdle wakes Drain once no transfer is active.
func (n *Node) signalIdle() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.idle != nil && n.active == 0 {
		select {
		case <-n.idle:
		default:
			close(n.idle)
		}
	}
}
