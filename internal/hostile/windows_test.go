package hostile

import (
	"context"
	"fmt"
	"math"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// TestHostileRegionWindows is finding 7: region windows whose offset and
// length overflow int64 were accepted, then failed as Internal. Every such
// window, as a source or a destination, gets OutOfRange and leaves the
// region free.
func TestHostileRegionWindows(t *testing.T) {
	v := startVictim(t, victimConfig{})
	ctx := context.Background()
	tc, peer := v.transferClient(t), v.peerClient(t)
	if _, err := tc.RegisterRegion(ctx, &pb.RegisterRegionRequest{Name: "r", Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	windows := []struct{ off, length int64 }{
		{1 << 62, 1 << 62},
		{math.MaxInt64, 1},
		{math.MaxInt64, 0},
		{1<<63 - 4096, 8192},
		{1 << 20, 1},
	}
	for i, w := range windows {
		t.Run(fmt.Sprintf("source %d:%d", w.off, w.length), func(t *testing.T) {
			stream, err := tc.Copy(ctx, &pb.CopyRequest{SourceRegion: &pb.RegionRef{Name: "r", Offset: w.off, Length: w.length}, DestPath: "/y"})
			err = copyOutcome(stream, err)
			if st := status.Convert(err); st.Code() != codes.OutOfRange {
				t.Errorf("Copy from window %d:%d = %s %q, want OutOfRange", w.off, w.length, st.Code(), st.Message())
			}
		})
		t.Run(fmt.Sprintf("destination %d:%d", w.off, w.length), func(t *testing.T) {
			size := max(w.length, 1)
			_, err := peer.Prepare(ctx, &pb.PrepareRequest{
				TransferId: fmt.Sprintf("window-%d", i), SourceNode: "hostile", SourceName: "x", Size: size, ChunkSize: 64 << 10,
				DestRegion: &pb.RegionRef{Name: "r", Offset: w.off, Length: w.length},
				Transport:  pb.TransportPolicy_TRANSPORT_POLICY_TCP, Tcp: &pb.TcpOffer{},
			})
			if st := status.Convert(err); st.Code() != codes.OutOfRange {
				t.Errorf("Prepare into window %d:%d = %s %q, want OutOfRange", w.off, w.length, st.Code(), st.Message())
			}
		})
	}
	t.Run("source offset", func(t *testing.T) {
		_, err := peer.Prepare(ctx, &pb.PrepareRequest{
			TransferId: "window-offset", SourceNode: "hostile", SourceName: "x", DestPath: "/z",
			Size: 1 << 20, ChunkSize: 64 << 10, SourceOffset: math.MaxInt64 - 10,
			Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP, Tcp: &pb.TcpOffer{},
		})
		if st := status.Convert(err); st.Code() != codes.OutOfRange {
			t.Errorf("Prepare with source offset %d + size %d = %s %q, want OutOfRange", int64(math.MaxInt64-10), 1<<20, st.Code(), st.Message())
		}
	})
	regions, err := tc.ListRegions(ctx, &pb.ListRegionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(regions.Regions) != 1 || regions.Regions[0].InUse != 0 {
		t.Errorf("regions after refused windows: %v, want r not in use", regions.Regions)
	}
	if names := v.names(t, "."); len(names) != 0 {
		t.Errorf("the root holds %q after refused requests, want nothing", names)
	}
}
