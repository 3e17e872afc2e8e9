package service

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

// The engine's enums are converted by number; their names must line up.
func TestEnumsLineUp(t *testing.T) {
	for s := transfer.StatePending; s <= transfer.StateCancelled; s++ {
		if got := stateToProto(s).String(); got != "STATE_"+strings.ToUpper(s.String()) {
			t.Errorf("state %v converts to %s", s, got)
		}
	}
	for _, tr := range []transfer.Transport{transfer.TransportTCP, transfer.TransportRDMA} {
		if got := transportToProto(tr).String(); got != "TRANSPORT_"+strings.ToUpper(tr.String()) {
			t.Errorf("transport %v converts to %s", tr, got)
		}
	}
	for p, want := range map[pb.TransportPolicy]transfer.Policy{pb.TransportPolicy_TRANSPORT_POLICY_AUTO: transfer.PolicyAuto,
		pb.TransportPolicy_TRANSPORT_POLICY_TCP: transfer.PolicyTCP, pb.TransportPolicy_TRANSPORT_POLICY_RDMA: transfer.PolicyRDMA} {
		if got, err := PolicyFromProto(p); got != want || err != nil {
			t.Errorf("policy %v converts to %v, %v", p, got, err)
		}
	}
	if pb.Direction(transfer.Incoming) != pb.Direction_DIRECTION_INCOMING || pb.Direction(transfer.Outgoing) != pb.Direction_DIRECTION_OUTGOING {
		t.Error("directions do not line up")
	}
}

// An enum value the API does not define is ErrInvalid, never a default.
func TestUnknownEnumsRefused(t *testing.T) {
	for _, p := range []pb.TransportPolicy{-1, 3, 42} {
		if got, err := PolicyFromProto(p); !errors.Is(err, transfer.ErrInvalid) || status.Code(ToStatus(err)) != codes.InvalidArgument {
			t.Errorf("policy %d converts to %v, %v; want InvalidArgument", p, got, err)
		}
	}
	for _, tr := range []pb.Transport{pb.Transport_TRANSPORT_UNSPECIFIED, -1, 3, 42} {
		if got, err := transportFromProto(tr); !errors.Is(err, transfer.ErrInvalid) {
			t.Errorf("transport %d converts to %v, %v; want ErrInvalid", tr, got, err)
		}
	}
	for _, tr := range []pb.Transport{pb.Transport_TRANSPORT_TCP, pb.Transport_TRANSPORT_RDMA} {
		if got, err := transportFromProto(tr); err != nil || transportToProto(got) != tr {
			t.Errorf("transport %v converts to %v, %v", tr, got, err)
		}
	}
}

// An engine error survives the trip through a peer's status and back.
func TestStatusRoundTrip(t *testing.T) {
	for _, m := range codeOf {
		err := fmt.Errorf("destination %q: %w", "/x", m.err)
		st := ToStatus(err)
		if status.Code(st) != m.code {
			t.Errorf("%v → %v, want %v", m.err, status.Code(st), m.code)
		}
		back := fromStatus("peer:1", st)
		if status.Code(ToStatus(back)) != m.code {
			t.Errorf("%v does not survive a round trip: %v", m.err, back)
		}
	}
	if !errors.Is(fromStatus("p:1", status.Error(codes.Unavailable, "down")), transfer.ErrPeerUnavailable) {
		t.Error("Unavailable from a peer is not ErrPeerUnavailable")
	}
	if status.Code(ToStatus(errors.New("boom"))) != codes.Internal {
		t.Error("an unknown error is not Internal")
	}
	if fromStatus("p:1", nil) != nil || ToStatus(nil) != nil {
		t.Error("nil errors must stay nil")
	}
}
