package service

import (
	"context"
	"fmt"
	"time"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

// Directory trees on the wire: the manifest travels in Prepare, in batches
// of at most transfer.TreeBatchEntries entries and about
// transfer.TreeBatchBytes bytes (gRPC's message limit is 4 MiB); the
// destination gathers them (transfer.Node.Prepare) until the last.

// treeToProto converts entries of a manifest.
func treeToProto(entries []transfer.TreeEntry, preserve bool) *pb.TreeManifest {
	out := &pb.TreeManifest{Entries: make([]*pb.TreeEntry, 0, len(entries)), Preserve: preserve}
	for _, e := range entries {
		pe := &pb.TreeEntry{Path: []byte(e.Path), Kind: pb.TreeEntryKind(e.Kind), Size: e.Size, Mode: e.Mode,
			MtimeUnixNs: e.MtimeNs, Uid: e.UID, Gid: e.GID, LinkTarget: []byte(e.Target), Sparse: e.Data != nil}
		for _, r := range e.Data {
			pe.Data = append(pe.Data, &pb.TreeDataRange{Offset: r.Offset, Length: r.Length})
		}
		out.Entries = append(out.Entries, pe)
	}
	return out
}

// treeFromProto converts a batch; the engine validates it (ValidateTree)
// and counts it against its limits before keeping it.
func treeFromProto(m *pb.TreeManifest) (*transfer.TreeManifest, error) {
	if m == nil {
		return nil, nil
	}
	out := &transfer.TreeManifest{Entries: make([]transfer.TreeEntry, 0, min(len(m.Entries), transfer.TreeBatchEntries)), Preserve: m.Preserve}
	if len(m.Entries) > transfer.TreeBatchEntries {
		return nil, fmt.Errorf("%w: a manifest batch of %d entries (at most %d)", transfer.ErrTreeLimit, len(m.Entries), transfer.TreeBatchEntries)
	}
	for _, pe := range m.Entries {
		if pe == nil {
			return nil, fmt.Errorf("%w: an empty manifest entry", transfer.ErrInvalid)
		}
		e := transfer.TreeEntry{Path: string(pe.Path), Kind: transfer.TreeKind(pe.Kind), Size: pe.Size, Mode: pe.Mode,
			MtimeNs: pe.MtimeUnixNs, UID: pe.Uid, GID: pe.Gid, Target: string(pe.LinkTarget)}
		if pe.Kind < pb.TreeEntryKind_TREE_ENTRY_KIND_DIRECTORY || pe.Kind > pb.TreeEntryKind_TREE_ENTRY_KIND_SYMLINK {
			return nil, fmt.Errorf("%w: manifest entry %s has unknown kind %d", transfer.ErrInvalid, transfer.Quote(e.Path), pe.Kind)
		}
		if pe.Sparse {
			e.Data = make([]transfer.DataRange, 0, len(pe.Data))
			for _, r := range pe.Data {
				if r == nil {
					return nil, fmt.Errorf("%w: manifest entry %s has an empty data range", transfer.ErrInvalid, transfer.Quote(e.Path))
				}
				e.Data = append(e.Data, transfer.DataRange{Offset: r.Offset, Length: r.Length})
			}
		} else if len(pe.Data) > 0 {
			return nil, fmt.Errorf("%w: manifest entry %s has data ranges but is not sparse", transfer.ErrInvalid, transfer.Quote(e.Path))
		}
		out.Entries = append(out.Entries, e)
	}
	return out, nil
}

// treeBatches splits a manifest's entries into Prepare batches.
func treeBatches(entries []transfer.TreeEntry) [][]transfer.TreeEntry {
	var out [][]transfer.TreeEntry
	start, bytes := 0, int64(0)
	for i, e := range entries {
		b := e.EntryBytes()
		if i > start && (i-start >= transfer.TreeBatchEntries || bytes+b > transfer.TreeBatchBytes) {
			out = append(out, entries[start:i])
			start, bytes = i, 0
		}
		bytes += b
	}
	return append(out, entries[start:])
}

// prepareTree sends a tree's Prepare as batches: every batch but the last
// is answered with tree_pending; the last with the channels.
func (c *peerClient) prepareTree(ctx context.Context, req transfer.PrepareRequest) (*pb.PrepareResponse, error) {
	batches := treeBatches(req.Tree.Entries)
	for i, b := range batches {
		last := i == len(batches)-1
		m := *req.Tree
		m.Entries = b
		r := req
		r.Tree, r.TreeMore, r.TreeBatch = &m, !last, i
		if !last {
			r.RDMA = nil // the lanes go with the last batch
		}
		resp, err := c.prepareOne(ctx, r)
		if err != nil || last {
			return resp, err
		}
		if !resp.TreePending {
			// A destination that predates trees prepared a file: abort it.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			c.rpc.Abort(actx, &pb.AbortRequest{TransferId: req.ID, Reason: "it does not support directory trees", Discard: true})
			cancel()
			return nil, fmt.Errorf("%w: destination answered batch %d of %d of the tree's manifest without taking it (its rxfer predates directory trees? upgrade it)", transfer.ErrTransportUnavailable, i+1, len(batches))
		}
	}
	return nil, nil // not reached: the last batch returns
}
