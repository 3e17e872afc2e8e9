package transfer

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Per-client limits and the first-byte deadline: what one peer can hold of
// a node (its slots, its disk) with Prepares it never follows with data.
const (
	// DefaultMaxTransfersPerClient leaves most of DefaultMaxConcurrent to
	// the other clients.
	DefaultMaxTransfersPerClient = 16
	// DefaultMaxReservedPerClient is the disk one client may have
	// preallocated for unfinished transfers (1 TiB).
	DefaultMaxReservedPerClient = 1 << 40
	// DefaultFirstByteTimeout is how long a prepared transfer waits for its
	// first chunk before it is aborted.
	DefaultFirstByteTimeout = 10 * time.Second
)

// clientQuota counts what each client address holds: unfinished incoming
// transfers and the bytes their partial files reserve.
type clientQuota struct {
	mu   sync.Mutex
	held map[string]*clientUsage
}

type clientUsage struct {
	transfers int
	reserved  int64
}

// clientHost is the key of a client address: its host, so that a client's
// connections from several ports count together.
func clientHost(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// take admits one more transfer of reserve bytes from client, or says which
// limit it would exceed. credit bytes that creditHost holds for a kept
// partial file are handed over to this transfer (it resumes that file, so
// they are not counted twice). release gives the transfer's share back; it
// is idempotent.
func (q *clientQuota) take(cfg *Config, client string, reserve int64, creditHost string, credit int64) (release func(), err error) {
	host := clientHost(client)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.held == nil {
		q.held = make(map[string]*clientUsage)
	}
	if c := q.held[creditHost]; c != nil && credit > 0 {
		c.reserved -= credit
		defer func() {
			if err != nil {
				c.reserved += credit
			} else {
				q.drop(creditHost, c)
			}
		}()
	}
	u := q.held[host]
	if u == nil {
		u = &clientUsage{}
	}
	switch {
	case cfg.MaxTransfersPerClient > 0 && u.transfers >= cfg.MaxTransfersPerClient:
		return nil, fmt.Errorf("%w: client %s already has %d unfinished transfers on node %s (limit %d, serve --max-transfers-per-client)",
			ErrQuota, host, u.transfers, cfg.ID, cfg.MaxTransfersPerClient)
	case cfg.MaxReservedPerClient > 0 && reserve > cfg.MaxReservedPerClient-u.reserved:
		return nil, fmt.Errorf("%w: client %s has %d bytes reserved on node %s (kept partial files of failed copies included); %d more exceed the limit of %d (serve --max-reserved-per-client; rxfer cancel --discard frees a kept one)",
			ErrQuota, host, u.reserved, cfg.ID, reserve, cfg.MaxReservedPerClient)
	}
	u.transfers++
	u.reserved += reserve
	q.held[host] = u
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			u.transfers--
			u.reserved -= reserve
			q.drop(host, u)
		})
	}, nil
}

// drop forgets a client that holds nothing; the caller holds q.mu.
func (q *clientQuota) drop(host string, u *clientUsage) {
	if u.transfers == 0 && u.reserved <= 0 && q.held[host] == u {
		delete(q.held, host)
	}
}

// keep counts bytes of a kept partial file against host's reservation:
// disk reserved but unused until a resume, the sweep or a discard.
func (q *clientQuota) keep(host string, bytes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.held == nil {
		q.held = make(map[string]*clientUsage)
	}
	u := q.held[host]
	if u == nil {
		u = &clientUsage{}
		q.held[host] = u
	}
	u.reserved += bytes
}

// unkeep gives back what keep counted.
func (q *clientQuota) unkeep(host string, bytes int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if u := q.held[host]; u != nil {
		u.reserved -= bytes
		q.drop(host, u)
	}
}

// sawData notes that data arrived for the transfer: from the first chunk
// on, the idle timeout replaces the first-byte deadline.
func (in *incoming) sawData() {
	if in.gotData.Swap(true) {
		return
	}
	in.rec.mu.Lock()
	defer in.rec.mu.Unlock()
	if in.idle != nil && in.rec.info.State == StateMoving {
		in.idle.Reset(in.node.cfg.IdleTimeout)
	}
}

// stalled is why an incoming transfer's timer fired: no first byte within
// the first-byte deadline, or no progress for the idle timeout.
func (in *incoming) stalled() error {
	cfg := in.node.cfg
	if !in.gotData.Load() {
		return fmt.Errorf("%w: no data from %s within %v of Prepare (serve --first-byte-timeout)", ErrTimeout, in.source, cfg.FirstByteTimeout)
	}
	return fmt.Errorf("%w: no data or commit from %s for %v", ErrTimeout, in.source, cfg.IdleTimeout)
}
