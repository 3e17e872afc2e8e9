package service

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/transfer"
)

const (
	// peerPoolSize bounds the destinations a node keeps a connection to;
	// the least recently used beyond it is closed.
	peerPoolSize = 64
	// peerIdleTimeout: a pooled connection unused this long closes its
	// transport (gRPC's idle mode); the next copy reconnects.
	peerIdleTimeout = 5 * time.Minute
)

// errPoolClosed: the node is stopping and dials no more peers.
var errPoolClosed = errors.New("this node is stopping")

// poolKey is what a pooled connection is bound to: the address dialled
// (whose host the TLS handshake verified the certificate names), the
// bearer token its calls carry, and the TLS client that verified it.
type poolKey struct {
	addr  string
	token string
	tls   *pki.Client
}

// pooledConn is one connection to a destination, shared by the copies to it.
type pooledConn struct {
	key  poolKey
	conn *grpc.ClientConn
	gen  uint64 // the TLS client's generation when dialled (0: plaintext)
	used uint64 // the pool's tick at the last checkout: LRU order
	refs int    // copies using it now
	gone bool   // out of the pool: closed when refs reach 0
}

// peerPool keeps a node's connections to the destinations it copies to, so
// a copy does not pay a TCP and TLS handshake. A connection is redialled
// when the node's own certificate, key or CA files change (new copies then
// present and trust only the new ones) and when a copy finds it Unavailable.
type peerPool struct {
	mu     sync.Mutex
	max    int
	idle   time.Duration
	conns  map[poolKey]*pooledConn
	tick   uint64
	closed bool
	dial   []grpc.DialOption // added to every connection (the metrics' interceptors)
}

func newPeerPool(max int, idle time.Duration) *peerPool {
	return &peerPool{max: max, idle: idle, conns: make(map[poolKey]*pooledConn)}
}

// Peer returns a transfer.Peer for the node at addr over a pooled
// connection; its Close returns the connection to the pool. A pinned
// destination (a CLI's one-copy peer) gets a connection of its own.
func (p *peerPool) Peer(c Credentials, addr string) (transfer.Peer, error) {
	if len(c.Pin) > 0 {
		return c.DialPeer(addr)
	}
	e, reused, err := p.get(c, addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", transfer.ErrPeerUnavailable, addr, err)
	}
	pc := &peerClient{addr: addr, onBehalfOf: c.onBehalfOf, pool: p, creds: c}
	pc.use(e, reused)
	return pc, nil
}

// get checks out the connection for c and addr, dialling it if there is
// none or if it was made under an older TLS generation; reused says it
// has carried copies before.
func (p *peerPool) get(c Credentials, addr string) (e *pooledConn, reused bool, err error) {
	var gen uint64
	if c.TLS != nil {
		gen = c.TLS.Generation() // re-reads changed files, outside the pool's lock
	}
	key := poolKey{addr: addr, token: c.Token, tls: c.TLS}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, false, errPoolClosed
	}
	p.tick++
	if e := p.conns[key]; e != nil {
		if e.gen == gen {
			e.refs++
			e.used = p.tick
			return e, true, nil
		}
		p.removeLocked(e) // it trusts or presents a replaced certificate
	}
	opts, err := c.dialOptions(addr)
	if err != nil {
		return nil, false, err
	}
	conn, err := grpc.NewClient(addr, append(append(opts, p.dial...), grpc.WithIdleTimeout(p.idle))...)
	if err != nil {
		return nil, false, err
	}
	e = &pooledConn{key: key, conn: conn, gen: gen, used: p.tick, refs: 1}
	p.conns[key] = e
	if len(p.conns) > p.max {
		var lru *pooledConn
		for _, o := range p.conns {
			if o != e && (lru == nil || o.used < lru.used) {
				lru = o
			}
		}
		p.removeLocked(lru)
	}
	return e, false, nil
}

// removeLocked takes e out of the pool, closing it now or when its last
// copy is done; p.mu is held.
func (p *peerPool) removeLocked(e *pooledConn) {
	if p.conns[e.key] == e {
		delete(p.conns, e.key)
	}
	e.gone = true
	if e.refs == 0 {
		e.conn.Close()
	}
}

// release returns a checked-out connection; drop also takes it out of the
// pool (it failed).
func (p *peerPool) release(e *pooledConn, drop bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e.refs--
	if drop && !e.gone {
		p.removeLocked(e)
	} else if e.gone && e.refs == 0 && !p.closed {
		e.conn.Close()
	}
}

// Close closes every pooled connection (cancelling their calls) and dials
// no more: the node is stopping.
func (p *peerPool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, e := range p.conns {
		e.gone = true
		e.conn.Close()
	}
	clear(p.conns)
}

// use points c at the checked-out connection e.
func (c *peerClient) use(e *pooledConn, reused bool) {
	c.entry, c.reused = e, reused
	c.conn, c.rpc = e.conn, pb.NewPeerClient(e.conn)
}

// redial replaces a reused pooled connection that a call found
// Unavailable (the peer restarted, or gRPC is backing off from a failed
// reconnect) with a new one; it reports whether it did.
func (c *peerClient) redial() bool {
	if c.pool == nil || !c.reused {
		return false
	}
	c.pool.release(c.entry, true)
	e, reused, err := c.pool.get(c.creds, c.addr)
	if err != nil {
		c.entry = nil // calls on the released connection fail; Close has nothing to return
		return false
	}
	c.use(e, reused)
	return true
}
