package rdma

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// PoolConfig configures a [Pool].
type PoolConfig struct {
	// Options choose the device, GID and port of every connection.
	Options Options
	// IdleExpiry is how long a connection stays parked after a transfer
	// (<= 0: nothing is parked, every transfer sets up its own).
	IdleExpiry time.Duration
	// Log receives the pool's notes (a lane not set up, a parked
	// connection not kept); nil discards them.
	Log *slog.Logger
	// Expired, when set, is told after a parked connection expired and was
	// closed: a sender (outgoing) or a receiver's endpoint, and its QPN. An
	// expiry is a timer, with nothing else to wait on: the engine's tests
	// wait on this.
	Expired func(outgoing bool, qpn uint32)
}

// Pool owns a node's RDMA connections between transfers: it sets up the
// connections a transfer asks for, reusing the ones parked by an earlier
// transfer to or from the same peer, and parks them again when a transfer
// leaves them clean. Senders are parked by destination (and device);
// receiving endpoints by the source queue pair they are connected to, so a
// sender's offer (EndpointInfo.ConnectedQPN) finds its partner. Parked
// connections expire after PoolConfig.IdleExpiry, and are closed at once
// when their device is being removed or reports them unusable. Its methods
// may be called concurrently.
type Pool struct {
	opt       Options
	expiry    time.Duration
	log       *slog.Logger
	senders   *idlePool[*Sender]
	endpoints *idlePool[*ParkedEndpoint]
}

// NewPool returns an empty Pool.
func NewPool(cfg PoolConfig) *Pool {
	p := &Pool{opt: cfg.Options, expiry: cfg.IdleExpiry, log: cfg.Log}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	expired := func(outgoing bool, qpn uint32) {
		if cfg.Expired != nil {
			cfg.Expired(outgoing, qpn)
		}
	}
	p.senders = newIdlePool(cfg.IdleExpiry, func(s *Sender) {
		if err := s.Close(); err != nil {
			p.log.Warn("closing an idle RDMA sender", "err", err)
		}
	}, func(s *Sender) { expired(true, s.QPN()) })
	p.endpoints = newIdlePool(cfg.IdleExpiry, func(e *ParkedEndpoint) {
		if err := e.Close(); err != nil {
			p.log.Warn("closing an idle RDMA endpoint", "err", err)
		}
	}, func(e *ParkedEndpoint) { expired(false, e.QPN()) })
	// Parked queue pairs keep their device open: let go of a device that is
	// being removed (one netlink query per device and tick) ...
	p.senders.gone, p.endpoints.gone = DeviceRemoved, DeviceRemoved
	// ... and of one whose device reported it unusable (port down, device fatal).
	p.senders.broken = func(s *Sender) bool { return s.Lost() != nil }
	p.endpoints.broken = func(e *ParkedEndpoint) bool { return e.Lost() != nil }
	return p
}

// Parking reports whether the pool keeps connections at all (IdleExpiry >
// 0): a receiver that would be closed anyway need not settle for parking.
func (p *Pool) Parking() bool { return p.expiry > 0 }

// senderKey names the senders parked for a destination on our device.
func (p *Pool) senderKey(dest string) string { return dest + "\x00" + p.opt.Device }

// endpointKey names a parked endpoint by the source QP it is connected to.
func endpointKey(source string, qpn uint32, gid [16]byte) string {
	return fmt.Sprintf("%s\x00%#x\x00%x", source, qpn, gid)
}

// Senders returns up to n senders for a transfer to dest (a node's
// host:port as the control plane names it): those parked by an earlier
// transfer to dest first, still connected to its queue pairs, then new
// ones on a GID that reaches dest's address. Their offers for the receiver
// are [Sender.Offer]. An error (for [UnavailableReason]) comes only with no
// sender; fewer than n is noted in the log.
func (p *Pool) Senders(dest string, n int) ([]*Sender, error) {
	key := p.senderKey(dest)
	var out []*Sender
	var peer *netip.Addr
	for len(out) < n {
		if s, ok := p.senders.take(key, nil); ok {
			out = append(out, s)
			continue
		}
		if peer == nil {
			a := peerAddr(dest)
			peer = &a
		}
		s, _, err := NewSender(p.opt, *peer)
		if err != nil {
			if len(out) == 0 {
				return nil, err
			}
			p.log.Info("RDMA lane not set up; striping over fewer", "lanes", len(out), "err", err)
			break
		}
		out = append(out, s)
	}
	return out, nil
}

// Release ends a transfer's senders: with reusable (the transfer committed
// with every chunk over RDMA) those that park cleanly ([Sender.Park]) are
// kept for the next transfer to dest, and the rest are closed (a lane the
// receiver did not take is not connected: it does not park). nil entries
// are skipped.
func (p *Pool) Release(dest string, ss []*Sender, reusable bool) {
	for _, s := range ss {
		if s == nil {
			continue
		}
		if reusable && p.Parking() {
			if _, err := s.Park(); err == nil {
				p.senders.put(p.senderKey(dest), s.Device(), s)
				continue
			}
		}
		s.Close()
	}
}

// Answer is a receiver's side of one connection as its sender needs it:
// our endpoint and slots, whether the slots are a window (chunk i → slot i)
// and whether the endpoint is the parked one the sender's offer is still
// connected to.
type Answer struct {
	Endpoint EndpointInfo
	Slots    []RemoteBuffer
	Window   bool
	Resumed  bool
}

// Receiver sets up the receiving side of one connection for offer, a
// queue pair of the node source: on the endpoint parked connected to it, if
// the offer names one (whatever else is parked for that queue pair is
// stale and closed), else on a new one. modes are tried in order (a window,
// then staging slots, say), the parked endpoint by the first; if the last
// fails on the parked endpoint it is tried once more on a new one. Why a
// mode was passed over goes to log.
func (p *Pool) Receiver(source string, offer EndpointInfo, log *slog.Logger, modes ...ReceiverConfig) (*Receiver, Answer, error) {
	key := endpointKey(source, offer.QPN, offer.GID)
	var parked *ParkedEndpoint
	if offer.ConnectedQPN != 0 {
		parked, _ = p.endpoints.take(key, func(e *ParkedEndpoint) bool {
			return e.QPN() == offer.ConnectedQPN && e.Peer().QPN == offer.QPN && e.Peer().GID == offer.GID
		})
	}
	p.endpoints.drop(key, false)
	if len(modes) == 0 {
		if parked != nil {
			parked.Close()
		}
		return nil, Answer{}, fmt.Errorf("rdma: no receive mode")
	}
	for i, cfg := range modes {
		resumed := parked != nil
		cfg.Resume, parked = parked, nil // NewReceiver closes it on error
		r, info, bufs, err := NewReceiver(p.opt, offer, cfg)
		if err == nil {
			return r, Answer{Endpoint: info, Slots: bufs, Window: cfg.Window != nil, Resumed: resumed}, nil
		}
		switch {
		case i < len(modes)-1:
			log.Info("RDMA receive mode unavailable; trying the next", "window", cfg.Window != nil, "err", err)
		case resumed:
			log.Info("resuming a parked RDMA connection failed; using a fresh one", "err", err)
			cfg.Resume = nil
			if r, info, bufs, err = NewReceiver(p.opt, offer, cfg); err == nil {
				return r, Answer{Endpoint: info, Slots: bufs, Window: cfg.Window != nil}, nil
			}
			return nil, Answer{}, err
		default:
			return nil, Answer{}, err
		}
	}
	panic("unreachable")
}

// Decline tells the pool that offers of source were not taken: the source
// closes those queue pairs, so whatever is parked connected to them is of
// no more use and is closed.
func (p *Pool) Decline(source string, offers []EndpointInfo) {
	for _, off := range offers {
		p.endpoints.drop(endpointKey(source, off.QPN, off.GID), false)
	}
}

// Keep parks receiving endpoints ([Receiver.Park]) of a committed transfer
// from source, for its next transfer to us.
func (p *Pool) Keep(source string, eps []*ParkedEndpoint) {
	for _, e := range eps {
		p.endpoints.put(endpointKey(source, e.Peer().QPN, e.Peer().GID), e.Device(), e)
	}
}

// Idle returns the number of parked connections: senders and receiving
// endpoints.
func (p *Pool) Idle() (senders, endpoints int) {
	return p.senders.len(), p.endpoints.len()
}

// Drop closes every parked connection and returns how many there were.
func (p *Pool) Drop() int {
	return p.senders.drop("", true) + p.endpoints.drop("", true)
}

// Close closes every parked connection; connections released afterwards
// are closed instead of parked.
func (p *Pool) Close() {
	p.senders.close()
	p.endpoints.close()
}

// peerAddr is the IP address in a node's host:port, to pick the local GID
// that reaches it. The zero Addr (unknown, or loopback: the peer is on this
// host and any local GID reaches it) lets device selection choose.
func peerAddr(node string) netip.Addr {
	host, _, err := net.SplitHostPort(node)
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.LookupIP(host)
		if lerr != nil || len(ips) == 0 {
			return netip.Addr{}
		}
		a, _ = netip.AddrFromSlice(ips[0])
	}
	if a = a.Unmap(); a.IsLoopback() {
		return netip.Addr{}
	}
	return a
}
