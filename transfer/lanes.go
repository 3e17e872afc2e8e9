package transfer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/rdma"
)

// RDMA lanes: a transfer stripes its chunks over one or more RDMA
// connections. Which connection a lane is (a parked one or a new one) is
// the rdma.Pool's business; this file says how many lanes a transfer gets,
// how each end sets them up, and converts between rdma's types and the
// plain ones the control plane carries.

// offerLanes sets up the source's lanes before Prepare: at most the node's
// lane count and no more than chunks (a small file needs one). It returns
// no lanes and the reason when RDMA is off for this push.
func (n *Node) offerLanes(policy Policy, dest string, chunks int) ([]*rdma.Sender, string) {
	if policy == PolicyTCP || n.cfg.RDMAUnavailable != "" {
		return nil, n.cfg.RDMAUnavailable
	}
	senders, err := n.pool.Senders(dest, min(n.cfg.RDMA.Lanes, max(1, chunks)))
	if err != nil {
		return nil, rdma.UnavailableReason(err)
	}
	return senders, ""
}

// offers are the lanes' queue pairs as the destination sees them.
func offers(senders []*rdma.Sender) []RDMAEndpoint {
	out := make([]RDMAEndpoint, 0, len(senders))
	for _, s := range senders {
		out = append(out, s.Offer())
	}
	return out
}

// attachLanes connects the source's lanes to the destination's answer (it
// took a prefix of them) and returns those lanes. A failure is a broken
// transport: the transfer may continue over TCP.
func (p *push) attachLanes(resp PrepareResponse) ([]*rdma.Sender, error) {
	if len(resp.RDMA) == 0 || len(resp.RDMA) > len(p.rdma) {
		return nil, fmt.Errorf("%w: destination answered %d RDMA lanes to the %d offered", ErrInvalid, len(resp.RDMA), len(p.rdma))
	}
	lanes := p.rdma[:len(resp.RDMA)]
	for i, ch := range resp.RDMA {
		s := lanes[i]
		reused, err := s.Attach(rdma.Answer{Endpoint: ch.Endpoint, Slots: ch.Slots, Window: ch.Direct, Resumed: ch.Reused})
		if err != nil {
			return nil, &transportBroken{fmt.Errorf("%w: connecting to the destination's queue pair: %w", ErrTransportUnavailable, err)}
		}
		if h := knobs.rdmaConnected; h != nil {
			h(s.QPN(), ch.Endpoint.QPN, reused)
		}
	}
	return lanes, nil
}

// acceptLanes sets up the destination's lanes for the source's offers when
// both ends can use RDMA, or returns why not: one lane per offered queue
// pair, up to our own lane count. A lane that cannot be set up ends the list
// (the source stripes over the lanes it gets), unless it is the first.
func (n *Node) acceptLanes(req PrepareRequest, in *incoming, resp *PrepareResponse) (reason string) {
	switch {
	case len(req.RDMA) == 0:
		return fmt.Sprintf("source %s cannot use RDMA: %s", req.SourceNode, req.RDMAUnavailable)
	case n.cfg.RDMAUnavailable != "":
		return fmt.Sprintf("destination %s cannot use RDMA: %s", n.cfg.ID, n.cfg.RDMAUnavailable)
	}
	lanes := min(len(req.RDMA), n.cfg.RDMA.Lanes)
	// Each lane's share of the slots, and no more than its share of the
	// chunks; slots no larger than the file (a 64 KiB copy registers 64 KiB).
	slots := max(1, min((n.cfg.RDMA.Slots+lanes-1)/lanes, (in.plan.Count()+lanes-1)/lanes))
	slotSize := int(max(1, min(req.ChunkSize, req.Size)))
	offered := req.RDMA
	n.pool.Decline(req.SourceNode, offered[lanes:]) // the source closes those
	// The destination range is mapped once, for every lane: window lanes
	// register it (a memfd-backed region: chunk i lands in place), staging
	// lanes copy verified chunks into it (rdma.MappedSink: two lanes' writers
	// no longer take turns on the inode lock) and without it pwrite.
	if req.Size > 0 && in.tree == nil { // a tree's chunks land through extents
		if mem, unmap, err := mapRange(in.dest.File(), in.dest.Base(), req.Size, unix.PROT_READ|unix.PROT_WRITE); err == nil {
			in.mapped, in.unmap = mem, unmap // after the lanes are closed (stopChannels)
		} else {
			n.logger(in.rec).Info("destination not mapped; RDMA lanes use staging slots and pwrite", "err", err)
		}
	}
	var sink chunk.Sink = rdmaSink{in}
	if in.tree != nil {
		sink = treeRDMASink{treeSink{in}}
	}
	var modes []rdma.ReceiverConfig
	if in.mapped != nil && n.landsInPlace(in) {
		modes = append(modes, rdma.ReceiverConfig{Sink: sink, Window: in.mapped, SlotSize: int(req.ChunkSize)})
	}
	modes = append(modes, rdma.ReceiverConfig{Sink: sink, Slots: slots, SlotSize: slotSize})
	log := n.logger(in.rec)
	for i, off := range offered[:lanes] {
		r, a, err := n.pool.Receiver(req.SourceNode, off, log, modes...)
		if err != nil {
			if i == 0 {
				reason = fmt.Sprintf("destination %s: %v", n.cfg.ID, err)
			} else {
				log.Info("RDMA lane not set up; striping over fewer", "lanes", i, "err", err)
			}
			break
		}
		in.rdma = append(in.rdma, r)
		resp.RDMA = append(resp.RDMA, RDMAChannel{Endpoint: a.Endpoint, Slots: a.Slots, Direct: a.Window, Reused: a.Resumed})
	}
	if len(in.rdma) == 0 {
		if in.mapped != nil {
			in.unmap()
			in.mapped, in.unmap = nil, nil
		}
		return reason
	}
	resp.Transport = TransportRDMA
	return ""
}

// rdmaSink is the Sink of an incoming transfer's RDMA receiver: it counts
// the chunks that landed over RDMA.
type rdmaSink struct{ *incoming }

func (s rdmaSink) Landed(c chunk.Chunk, err error) { s.landedVia(c, err, true) }

// treeRDMASink is the chunk.ExtentSink of an incoming tree's RDMA lanes.
type treeRDMASink struct{ treeSink }

func (s treeRDMASink) Landed(c chunk.Chunk, err error) { s.landedVia(c, err, true) }

// Mapping implements rdma.MappedSink.
func (s rdmaSink) Mapping() ([]byte, int64) { return s.mapped, s.dest.Base() }

// landsInPlace tells whether the destination may take chunks straight into
// its memory: a window of a memfd-backed region, registered for remote
// writes for this transfer only (no staging slot, no copy). Any other
// destination uses staging slots, as does a lane whose registration fails
// (e.g. refused by RLIMIT_MEMLOCK).
func (n *Node) landsInPlace(in *incoming) bool {
	t, ok := in.dest.(*regionTarget)
	return ok && !knobs.stagingOnly && in.plan.Count() <= rdma.MaxWindowSlots && n.anonymousRegion(t.ref.Name, t.file)
}

// parkLanes stops the destination's lanes, parking the clean ones when keep
// (every chunk came over RDMA): it returns them, to be kept by the pool
// once the transfer committed.
func (in *incoming) parkLanes(keep bool) (parked []*rdma.ParkedEndpoint) {
	for _, r := range in.rdma {
		if !keep {
			if err := r.Close(); err != nil {
				in.node.logger(in.rec).Warn("closing RDMA receiver", "err", err)
			}
		} else if e, err := r.Park(); err != nil {
			in.node.logger(in.rec).Info("RDMA connection not kept for reuse", "err", err)
		} else {
			parked = append(parked, e)
		}
	}
	return parked
}

// closeParked closes endpoints that were parked for a transfer that then
// did not commit.
func closeParked(eps []*rdma.ParkedEndpoint) {
	for _, e := range eps {
		e.Close()
	}
}

// Devices lists the RDMA device ports of this host, usable or not (Reason
// says why), or the error that kept it from looking.
func Devices() ([]RDMADevice, error) {
	return rdma.Inventory()
}

// Devices is [Devices] for the node's API: why RDMA is unavailable is in
// Config().RDMAUnavailable.
func (n *Node) Devices() []RDMADevice {
	devs, _ := Devices()
	return devs
}
