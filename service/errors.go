package service

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rxfer/rxfer/transfer"
)

// codeOf pairs each engine sentinel with its gRPC code. The same table maps
// engine errors to statuses at this node's boundary and a peer's statuses
// back to sentinels, so a destination's NotFound is the source's NotFound.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{transfer.ErrNotFound, codes.NotFound},
	{transfer.ErrExists, codes.AlreadyExists},
	{transfer.ErrPathEscape, codes.PermissionDenied},
	{transfer.ErrPermission, codes.PermissionDenied},
	{transfer.ErrUnexpected, codes.PermissionDenied},
	{transfer.ErrInvalid, codes.InvalidArgument},
	{transfer.ErrNoSpace, codes.ResourceExhausted},
	{transfer.ErrTooMany, codes.ResourceExhausted},
	{transfer.ErrQuota, codes.ResourceExhausted},
	{transfer.ErrCorrupt, codes.DataLoss},
	{transfer.ErrPeerUnavailable, codes.Unavailable},
	{transfer.ErrTransportUnavailable, codes.FailedPrecondition},
	{transfer.ErrIncomplete, codes.FailedPrecondition},
	{transfer.ErrCanceled, codes.Canceled},
	{transfer.ErrTimeout, codes.DeadlineExceeded},
	{transfer.ErrOutOfRange, codes.OutOfRange},
	{transfer.ErrBusy, codes.FailedPrecondition},
	{transfer.ErrRegionLimit, codes.ResourceExhausted},
	{transfer.ErrSourceChanged, codes.Aborted},
	{transfer.ErrTreeLimit, codes.ResourceExhausted},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// ToStatus converts an engine error into a gRPC status error.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isEngineErr(err) {
		return err
	}
	for _, m := range codeOf {
		if errors.Is(err, m.err) {
			return status.Error(m.code, err.Error())
		}
	}
	return status.Error(codes.Internal, err.Error())
}

func isEngineErr(err error) bool {
	for _, m := range codeOf {
		if errors.Is(err, m.err) {
			return true
		}
	}
	return false
}

// fromStatus converts a peer's gRPC status error into an engine error that
// wraps the matching sentinel, keeping the peer's message.
// maxPeerMessage bounds how much of a peer's status message is passed on.
const maxPeerMessage = 1024

func fromStatus(peer string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	// A peer's message reaches our logs and the user's terminal: cap it.
	if msg := st.Message(); len(msg) > maxPeerMessage {
		st = status.New(st.Code(), fmt.Sprintf("%s... (%d bytes)", msg[:maxPeerMessage], len(msg)))
	}
	if st.Code() == codes.Unavailable {
		return &peerError{fmt.Sprintf("peer %s unavailable: %s", peer, st.Message()), transfer.ErrPeerUnavailable}
	}
	for _, m := range codeOf {
		if m.code == st.Code() {
			return &peerError{st.Message(), m.err}
		}
	}
	return fmt.Errorf("peer %s: %s: %s", peer, st.Code(), st.Message())
}

// peerError carries a peer's message verbatim (it already names the
// problem) while matching the sentinel for its status code.
type peerError struct {
	msg string
	err error
}

func (e *peerError) Error() string { return e.msg }
func (e *peerError) Unwrap() error { return e.err }
