package service

import (
	"fmt"
	"math"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

func stateToProto(s transfer.State) pb.State {
	return pb.State(s) // the enums share numbering (pending = 1 ...)
}

func transportToProto(t transfer.Transport) pb.Transport { return pb.Transport(t) }

// PolicyFromProto converts a requested transport policy (the enums share
// numbering); the CLI's local copies use it too. A value the API does not
// define is ErrInvalid, never taken as AUTO.
func PolicyFromProto(p pb.TransportPolicy) (transfer.Policy, error) {
	switch p {
	case pb.TransportPolicy_TRANSPORT_POLICY_AUTO, pb.TransportPolicy_TRANSPORT_POLICY_TCP, pb.TransportPolicy_TRANSPORT_POLICY_RDMA:
		return transfer.Policy(p), nil
	}
	return 0, fmt.Errorf("%w: transport policy %d (want 0 AUTO, 1 TCP or 2 RDMA)", transfer.ErrInvalid, int32(p))
}

// transportFromProto converts the transport a destination chose: TCP or
// RDMA, nothing else.
func transportFromProto(t pb.Transport) (transfer.Transport, error) {
	switch t {
	case pb.Transport_TRANSPORT_TCP, pb.Transport_TRANSPORT_RDMA:
		return transfer.Transport(t), nil
	}
	return 0, fmt.Errorf("%w: the destination chose transport %d (want 1 TCP or 2 RDMA)", transfer.ErrInvalid, int32(t))
}

func policyToProto(p transfer.Policy) pb.TransportPolicy { return pb.TransportPolicy(p) }

// InfoToProto converts a transfer snapshot to its API form.
func InfoToProto(i transfer.Info) *pb.TransferInfo {
	out := &pb.TransferInfo{
		TransferId: i.ID, State: stateToProto(i.State), Direction: pb.Direction(i.Direction),
		SourcePath: i.SourcePath, DestNode: i.DestNode, DestPath: i.DestPath,
		BytesDone: i.BytesDone, BytesTotal: i.BytesTotal, RateBytesPerSec: i.Rate,
		Transport: transportToProto(i.Transport), FallbackReason: i.FallbackReason, Error: i.Err,
		ChunkSize: i.ChunkSize, Streams: int32(i.Streams), StartedUnixMs: i.Started.UnixMilli(),
		DataEncryption: i.DataEncryption, Verify: i.Verify,
		ResumedBytes: i.ResumedBytes, ResumeNote: i.ResumeNote, Resumable: i.Resumable,
		FilesDone: i.FilesDone, FilesTotal: i.FilesTotal, CurrentFile: []byte(i.CurrentFile), Warnings: i.Warnings, Tree: i.Tree,
	}
	if r := i.Result; r != nil {
		out.Result = &pb.TransferResult{Crc32C: r.CRC32C, FinalPath: r.FinalPath, Seconds: r.Duration.Seconds(),
			SetupSeconds: r.Setup.Seconds(), MovingSeconds: r.Moving.Seconds(), CommitSeconds: r.Commit.Seconds()}
	}
	return out
}

func endpointToProto(e transfer.RDMAEndpoint) *pb.RdmaEndpoint {
	return &pb.RdmaEndpoint{Device: e.Device, Qpn: e.QPN, Psn: e.PSN, Gid: e.GID[:], GidIndex: int32(e.GIDIndex), Mtu: int32(e.MTU), ConnectedQpn: e.ConnectedQPN}
}

// convertAll converts every element of in, stopping at the first error.
func convertAll[T, U any](in []T, conv func(T) (U, error)) ([]U, error) {
	out := make([]U, 0, len(in))
	for _, v := range in {
		u, err := conv(v)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, nil
}

func endpointsToProto(es []transfer.RDMAEndpoint) []*pb.RdmaEndpoint {
	out, _ := convertAll(es, func(e transfer.RDMAEndpoint) (*pb.RdmaEndpoint, error) { return endpointToProto(e), nil })
	return out
}

// endpointsFromProto validates and converts a source's offered lanes.
func endpointsFromProto(es []*pb.RdmaEndpoint) ([]transfer.RDMAEndpoint, error) {
	if len(es) > transfer.MaxRDMALanes {
		return nil, fmt.Errorf("%w: %d RDMA lanes offered, at most %d", transfer.ErrInvalid, len(es), transfer.MaxRDMALanes)
	}
	return convertAll(es, endpointFromProto)
}

// endpointFromProto validates and converts a peer's queue-pair description.
func endpointFromProto(e *pb.RdmaEndpoint) (transfer.RDMAEndpoint, error) {
	if e == nil {
		return transfer.RDMAEndpoint{}, fmt.Errorf("%w: empty RDMA endpoint", transfer.ErrInvalid)
	}
	if len(e.Gid) != 16 {
		return transfer.RDMAEndpoint{}, fmt.Errorf("%w: RDMA endpoint GID has %d bytes, want 16", transfer.ErrInvalid, len(e.Gid))
	}
	out := transfer.RDMAEndpoint{Device: e.Device, QPN: e.Qpn, PSN: e.Psn, GIDIndex: int(e.GidIndex), MTU: int(e.Mtu), ConnectedQPN: e.ConnectedQpn}
	copy(out.GID[:], e.Gid)
	return out, nil
}

func channelsToProto(cs []transfer.RDMAChannel) []*pb.RdmaChannel {
	out, _ := convertAll(cs, func(c transfer.RDMAChannel) (*pb.RdmaChannel, error) { return channelToProto(c), nil })
	return out
}

func channelsFromProto(cs []*pb.RdmaChannel) ([]transfer.RDMAChannel, error) {
	return convertAll(cs, channelFromProto)
}

func channelToProto(c transfer.RDMAChannel) *pb.RdmaChannel {
	out := &pb.RdmaChannel{Endpoint: endpointToProto(c.Endpoint), Direct: c.Direct, Reused: c.Reused}
	for _, b := range c.Slots {
		out.Slots = append(out.Slots, &pb.RdmaBuffer{Addr: b.Addr, Rkey: b.RKey, Length: b.Len})
	}
	return out
}

func channelFromProto(c *pb.RdmaChannel) (transfer.RDMAChannel, error) {
	if c == nil || c.Endpoint == nil || len(c.Slots) == 0 {
		return transfer.RDMAChannel{}, fmt.Errorf("%w: RDMA channel without an endpoint or slots", transfer.ErrInvalid)
	}
	ep, err := endpointFromProto(c.Endpoint)
	if err != nil {
		return transfer.RDMAChannel{}, err
	}
	out := transfer.RDMAChannel{Endpoint: ep, Direct: c.Direct, Reused: c.Reused}
	for i, b := range c.Slots {
		if b == nil { // never from the wire, but a converter takes any message
			return transfer.RDMAChannel{}, fmt.Errorf("%w: RDMA channel slot %d is empty", transfer.ErrInvalid, i)
		}
		out.Slots = append(out.Slots, transfer.RDMABuffer{Addr: b.Addr, RKey: b.Rkey, Len: b.Length})
	}
	return out, nil
}

// DevicesToProto converts the RDMA inventory ([transfer.Devices]) for the API.
func DevicesToProto(devs []transfer.RDMADevice) []*pb.RdmaDevice {
	var out []*pb.RdmaDevice
	for _, d := range devs {
		pd := &pb.RdmaDevice{Name: d.Name, Port: uint32(d.Port), State: d.State, LinkLayer: d.LinkLayer,
			ActiveMtu: int32(d.ActiveMTU), Netdev: d.Netdev, Usable: d.Usable, Reason: d.Reason}
		for _, a := range d.Addrs {
			pd.Addresses = append(pd.Addresses, a.String())
		}
		for _, g := range d.GIDs {
			addr := ""
			if g.Addr.IsValid() {
				addr = g.Addr.String()
			}
			pd.Gids = append(pd.Gids, &pb.RdmaGid{Index: int32(g.Index), Type: g.Type, Gid: g.GID, Address: addr})
		}
		out = append(out, pd)
	}
	return out
}

func regionRefFromProto(r *pb.RegionRef) (*transfer.RegionRef, error) {
	if r == nil {
		return nil, nil
	}
	if r.Name == "" || r.Offset < 0 || r.Length < 0 {
		return nil, fmt.Errorf("%w: region window %s offset %d length %d (want a name and offsets >= 0)", transfer.ErrInvalid, transfer.Quote(r.Name), r.Offset, r.Length)
	}
	if r.Offset > math.MaxInt64-r.Length {
		return nil, fmt.Errorf("%w: region window %s: offset %d + length %d is past the largest offset, %d", transfer.ErrOutOfRange, transfer.Quote(r.Name), r.Offset, r.Length, int64(math.MaxInt64))
	}
	return &transfer.RegionRef{Name: r.Name, Offset: r.Offset, Length: r.Length}, nil
}

func regionRefToProto(r *transfer.RegionRef) *pb.RegionRef {
	if r == nil {
		return nil
	}
	return &pb.RegionRef{Name: r.Name, Offset: r.Offset, Length: r.Length}
}

func regionToProto(r transfer.RegionInfo) *pb.RegionInfo {
	return &pb.RegionInfo{Name: r.Name, Size: r.Size, Backing: r.Backing, CreatedUnixMs: r.Created.UnixMilli(), InUse: int32(r.InUse)}
}

// copySecurityFromProto converts a Copy's data-encryption and verify options
// (the enums are numbered as the engine's); a value the API does not define
// is InvalidArgument.
func copySecurityFromProto(req *pb.CopyRequest) (transfer.DataEncryption, transfer.VerifyMode, error) {
	e, v := req.DataEncryption, req.Verify
	if _, ok := pb.DataEncryption_name[int32(e)]; !ok {
		return 0, 0, fmt.Errorf("%w: data_encryption %d (want 0 DEFAULT, 1 AUTO, 2 ON or 3 OFF)", transfer.ErrInvalid, int32(e))
	}
	if _, ok := pb.VerifyMode_name[int32(v)]; !ok {
		return 0, 0, fmt.Errorf("%w: verify %d (want 0 DEFAULT or 1 MAC)", transfer.ErrInvalid, int32(v))
	}
	return transfer.DataEncryption(e), transfer.VerifyMode(v), nil
}

func resumedToProto(cs []transfer.ResumedChunk) []*pb.ResumedChunk {
	out := make([]*pb.ResumedChunk, 0, len(cs))
	for _, c := range cs {
		out = append(out, &pb.ResumedChunk{Index: c.Index, Crc32C: c.CRC})
	}
	return out
}

// resumedFromProto converts the chunks a destination offers; the engine
// checks them against the transfer (push.checkResumed).
func resumedFromProto(cs []*pb.ResumedChunk) ([]transfer.ResumedChunk, error) {
	return convertAll(cs, func(c *pb.ResumedChunk) (transfer.ResumedChunk, error) {
		if c == nil {
			return transfer.ResumedChunk{}, fmt.Errorf("%w: an empty resumed chunk", transfer.ErrInvalid)
		}
		return transfer.ResumedChunk{Index: c.Index, CRC: c.Crc32C}, nil
	})
}
