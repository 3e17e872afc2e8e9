package service

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

// The converters take messages a client or peer sent. Each target checks that a
// conversion either gives values within the engine's bounds, equal to the message's,
// or an error that maps to InvalidArgument or OutOfRange and repeats at most 256
// bytes of the input.

// maxConvertErrLen bounds a converter's error: its own words plus at most 256 bytes
// of input, quoted (at most 4 characters a byte).
const maxConvertErrLen = 512 + 4*256

// checkConvertErr fails t unless err is a client error of bounded length.
func checkConvertErr(t *testing.T, what string, err error) {
	t.Helper()
	if c := status.Code(ToStatus(err)); c != codes.InvalidArgument && c != codes.OutOfRange {
		t.Fatalf("%s: error %v maps to %v, want InvalidArgument or OutOfRange", what, err, c)
	}
	if n := len(err.Error()); n > maxConvertErrLen {
		t.Fatalf("%s: a %d-byte error", what, n)
	}
}

// checkRegion checks regionRefFromProto's answer for r.
func checkRegion(t *testing.T, r *pb.RegionRef, got *transfer.RegionRef, err error) {
	t.Helper()
	switch {
	case err != nil:
		checkConvertErr(t, "region window", err)
	case r == nil:
		if got != nil {
			t.Fatalf("no region converts to %+v", got)
		}
	case got == nil:
		t.Fatalf("region %v converts to nil", r)
	case got.Name != r.Name || got.Offset != r.Offset || got.Length != r.Length:
		t.Fatalf("region %v converts to %+v", r, got)
	case got.Name == "" || got.Offset < 0 || got.Length < 0 || got.Offset > math.MaxInt64-got.Length:
		t.Fatalf("accepted region window %+v", got)
	}
}

// checkEndpoints checks endpointsFromProto's answer for es.
func checkEndpoints(t *testing.T, es []*pb.RdmaEndpoint, got []transfer.RDMAEndpoint, err error) {
	t.Helper()
	if err != nil {
		checkConvertErr(t, "RDMA endpoints", err)
		return
	}
	if len(got) != len(es) || len(got) > transfer.MaxRDMALanes {
		t.Fatalf("%d endpoints convert to %d (at most %d allowed)", len(es), len(got), transfer.MaxRDMALanes)
	}
	for i, e := range es {
		checkEndpoint(t, e, got[i])
	}
}

func checkEndpoint(t *testing.T, e *pb.RdmaEndpoint, got transfer.RDMAEndpoint) {
	t.Helper()
	if got.Device != e.Device || got.QPN != e.Qpn || got.PSN != e.Psn || !bytes.Equal(got.GID[:], e.Gid) ||
		got.GIDIndex != int(e.GidIndex) || got.MTU != int(e.Mtu) || got.ConnectedQPN != e.ConnectedQpn {
		t.Fatalf("endpoint %v converts to %+v", e, got)
	}
}

// checkChannels checks channelsFromProto's answer for cs.
func checkChannels(t *testing.T, cs []*pb.RdmaChannel, got []transfer.RDMAChannel, err error) {
	t.Helper()
	if err != nil {
		checkConvertErr(t, "RDMA channels", err)
		return
	}
	if len(got) != len(cs) {
		t.Fatalf("%d channels convert to %d", len(cs), len(got))
	}
	for i, c := range cs {
		g := got[i]
		checkEndpoint(t, c.GetEndpoint(), g.Endpoint)
		if g.Direct != c.GetDirect() || g.Reused != c.GetReused() || len(g.Slots) != len(c.GetSlots()) || len(g.Slots) == 0 {
			t.Fatalf("channel %v converts to %+v", c, g)
		}
		for j, s := range c.GetSlots() {
			if g.Slots[j] != (transfer.RDMABuffer{Addr: s.GetAddr(), RKey: s.GetRkey(), Len: s.GetLength()}) {
				t.Fatalf("slot %v converts to %v", s, g.Slots[j])
			}
		}
	}
}

func marshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

var (
	fuzzGID      = bytes.Repeat([]byte{0xfe, 0x80}, 8)
	fuzzEndpoint = &pb.RdmaEndpoint{Device: "rxe0", Qpn: 17, Psn: 0x123456, Gid: fuzzGID, GidIndex: 1, Mtu: 1024, ConnectedQpn: 18}
)

// FuzzPrepareRequest: Peer.Prepare's RDMA offer and destination window, from the
// bytes a source node sends.
func FuzzPrepareRequest(f *testing.F) {
	f.Add(marshal(f, &pb.PrepareRequest{TransferId: "t", DestPath: "/x", Size: 1 << 20, Rdma: []*pb.RdmaEndpoint{fuzzEndpoint, fuzzEndpoint}}))
	f.Add(marshal(f, &pb.PrepareRequest{DestRegion: &pb.RegionRef{Name: "buf", Offset: 4096, Length: 1 << 20}}))
	f.Add(marshal(f, &pb.PrepareRequest{Rdma: []*pb.RdmaEndpoint{{Gid: []byte{1, 2, 3}}}}))
	f.Add(marshal(f, &pb.PrepareRequest{Rdma: make([]*pb.RdmaEndpoint, transfer.MaxRDMALanes+1)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pb.PrepareRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		eps, err := endpointsFromProto(req.Rdma)
		checkEndpoints(t, req.Rdma, eps, err)
		r, err := regionRefFromProto(req.DestRegion)
		checkRegion(t, req.DestRegion, r, err)
	})
}

// FuzzCopyRequest: Transfer.Copy's region windows, from the bytes a client sends.
func FuzzCopyRequest(f *testing.F) {
	f.Add(marshal(f, &pb.CopyRequest{SourceRegion: &pb.RegionRef{Name: "a", Length: 4096}, DestRegion: &pb.RegionRef{Name: "b", Offset: 1 << 30}}))
	f.Add(marshal(f, &pb.CopyRequest{SourceRegion: &pb.RegionRef{Name: "a", Offset: -1}}))
	f.Add(marshal(f, &pb.CopyRequest{DestRegion: &pb.RegionRef{Offset: 1}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req pb.CopyRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		for _, ref := range []*pb.RegionRef{req.SourceRegion, req.DestRegion} {
			r, err := regionRefFromProto(ref)
			checkRegion(t, ref, r, err)
		}
	})
}

// FuzzPrepareResponse: the RDMA channels a destination node answers with.
func FuzzPrepareResponse(f *testing.F) {
	slots := []*pb.RdmaBuffer{{Addr: 0x7f0000001000, Rkey: 0x1234, Length: 4 << 20}, {Addr: 1<<64 - 1, Rkey: 1<<32 - 1, Length: 1<<32 - 1}}
	f.Add(marshal(f, &pb.PrepareResponse{Transport: pb.Transport_TRANSPORT_RDMA, Rdma: []*pb.RdmaChannel{{Endpoint: fuzzEndpoint, Slots: slots, Direct: true}}}))
	f.Add(marshal(f, &pb.PrepareResponse{Rdma: []*pb.RdmaChannel{{Endpoint: fuzzEndpoint}}}))
	f.Add(marshal(f, &pb.PrepareResponse{Rdma: []*pb.RdmaChannel{{Slots: slots}}}))
	f.Add(marshal(f, &pb.PrepareResponse{Rdma: []*pb.RdmaChannel{{Endpoint: &pb.RdmaEndpoint{Gid: make([]byte, 17)}, Slots: slots}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var resp pb.PrepareResponse
		if proto.Unmarshal(b, &resp) != nil {
			return
		}
		chs, err := channelsFromProto(resp.Rdma)
		checkChannels(t, resp.Rdma, chs, err)
	})
}

// FuzzRegionRef builds windows from fuzzed fields directly, so that long names and
// extreme offsets are reached without an encoder in the way.
func FuzzRegionRef(f *testing.F) {
	f.Add("buf", int64(0), int64(0), uint16(0))
	f.Add("buf", int64(1<<62), int64(1<<62-1), uint16(0))
	f.Add("buf", int64(-1), int64(1), uint16(0))
	f.Add("", int64(0), int64(0), uint16(0))
	f.Add("x", int64(0), int64(-1), uint16(200))
	f.Fuzz(func(t *testing.T, name string, off, length int64, repeat uint16) {
		ref := &pb.RegionRef{Name: strings.Repeat(name, max(1, int(repeat))), Offset: off, Length: length}
		r, err := regionRefFromProto(ref)
		checkRegion(t, ref, r, err)
	})
}

// FuzzChannelFromProto builds channels in memory, where nil elements (which
// proto.Unmarshal never makes) can occur.
func FuzzChannelFromProto(f *testing.F) {
	f.Add(fuzzGID, uint32(17), uint8(2), uint8(0xff), uint64(0x1000), uint32(7), uint32(4096), false)
	f.Add([]byte{1}, uint32(0), uint8(0), uint8(0xff), uint64(0), uint32(0), uint32(0), true)
	f.Fuzz(func(t *testing.T, gid []byte, qpn uint32, nSlots, nilSlot uint8, addr uint64, rkey, length uint32, nilEndpoint bool) {
		c := &pb.RdmaChannel{Endpoint: &pb.RdmaEndpoint{Qpn: qpn, Gid: gid}}
		if nilEndpoint {
			c.Endpoint = nil
		}
		for i := range nSlots % 8 {
			s := &pb.RdmaBuffer{Addr: addr + uint64(i), Rkey: rkey, Length: length}
			if i == nilSlot {
				s = nil
			}
			c.Slots = append(c.Slots, s)
		}
		for _, cs := range [][]*pb.RdmaChannel{{c}, {c, nil}} {
			chs, err := channelsFromProto(cs)
			checkChannels(t, cs, chs, err)
		}
	})
}

// FuzzFromStatus: a peer's status, any code and message, becomes an engine error
// that maps back to the same code when the code is one the engine knows.
func FuzzFromStatus(f *testing.F) {
	for _, c := range []codes.Code{codes.OK, codes.NotFound, codes.Unavailable, codes.Internal, codes.PermissionDenied, 42} {
		f.Add(uint32(c), "destination \"/x\": not found")
	}
	f.Fuzz(func(t *testing.T, code uint32, msg string) {
		err := fromStatus("peer:1", status.Error(codes.Code(code), msg))
		if codes.Code(code) == codes.OK {
			if err != nil {
				t.Fatalf("OK converts to %v", err)
			}
			return
		}
		if err == nil {
			t.Fatalf("code %d converts to nil", code)
		}
		for _, m := range codeOf {
			if m.code == codes.Code(code) {
				if !errors.Is(err, m.err) && !(m.code == codes.Unavailable && errors.Is(err, transfer.ErrPeerUnavailable)) {
					t.Fatalf("code %v converts to %v, which is not %v", m.code, err, m.err)
				}
				if got := status.Code(ToStatus(err)); got != m.code {
					t.Fatalf("code %v comes back as %v", m.code, got)
				}
				return
			}
		}
		if got := status.Code(ToStatus(err)); got != codes.Internal && got != codes.Code(code) {
			t.Fatalf("unknown code %d comes back as %v", code, got)
		}
	})
}
