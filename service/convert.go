package service

import (
	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

func stateToProto(s transfer.State) pb.State {
	return pb.State(s) // the enums share numbering (pending = 1 ...)
}

func transportToProto(t transfer.Transport) pb.Transport { return pb.Transport(t) }

func policyFromProto(p pb.TransportPolicy) transfer.Policy { return transfer.Policy(p) }

// InfoToProto converts a transfer snapshot to its API form.
func InfoToProto(i transfer.Info) *pb.TransferInfo {
	out := &pb.TransferInfo{
		TransferId: i.ID, State: stateToProto(i.State), Direction: pb.Direction(i.Direction),
		SourcePath: i.SourcePath, DestNode: i.DestNode, DestPath: i.DestPath,
		BytesDone: i.BytesDone, BytesTotal: i.BytesTotal, RateBytesPerSec: i.Rate,
		Transport: transportToProto(i.Transport), FallbackReason: i.FallbackReason, Error: i.Err,
		ChunkSize: i.ChunkSize, Streams: int32(i.Streams), StartedUnixMs: i.Started.UnixMilli(),
	}
	if r := i.Result; r != nil {
		out.Result = &pb.TransferResult{Crc32C: r.CRC32C, FinalPath: r.FinalPath, Seconds: r.Duration.Seconds()}
	}
	return out
}
