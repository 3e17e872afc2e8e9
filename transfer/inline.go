package transfer

import (
	"context"
	"fmt"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
)

// MaxInlineSize is the largest file whose bytes ride in the Prepare request
// itself. A small copy is mostly round trips: Prepare, a data connection and
// its preamble, the chunk's acknowledgement, Commit (about 3 ms of a 4 KiB
// copy's 3.5, README.md). Inline it is one round trip, and the bytes are
// checked and committed in it.
const MaxInlineSize = 64 << 10

// InlineData is a small file's bytes carried in a PrepareRequest.
type InlineData struct {
	Bytes  []byte
	CRC32C uint32 // the source's CRC32C of Bytes
}

// GetBytes returns the bytes (nil for a nil InlineData).
func (d *InlineData) GetBytes() []byte {
	if d == nil {
		return nil
	}
	return d.Bytes
}

// GetCRC32C returns the CRC32C (0 for a nil InlineData).
func (d *InlineData) GetCRC32C() uint32 {
	if d == nil {
		return 0
	}
	return d.CRC32C
}

// inlineEligible reports whether a push sends its bytes in the Prepare:
// a small file for a file destination, no whole-file MAC (that travels in
// Commit), and no RDMA lanes offered (between RDMA nodes a small copy rides
// a parked queue pair and says it went over RDMA).
func (p *push) inlineEligible(req PushRequest) bool {
	return p.plan.Size > 0 && p.plan.Size <= MaxInlineSize && p.plan.Size <= p.plan.ChunkSize &&
		req.DestRegion == nil && p.tree == nil && req.Policy != PolicyRDMA && len(p.rdma) == 0 && p.verify != VerifyMAC
}

// inlineCommitted records a commit the destination made in its Prepare.
func (p *push) inlineCommitted(in *InlineData, resp PrepareResponse) error {
	rec := p.rec
	c := resp.Committed
	if c.CRC32C != in.CRC32C {
		return fmt.Errorf("%w: destination committed CRC32C %08x, source computed %08x", ErrCorrupt, c.CRC32C, in.CRC32C)
	}
	now := time.Now()
	rec.mu.Lock()
	rec.info.BytesDone = p.plan.Size
	if rec.info.FallbackReason == "" && p.policy == PolicyAuto {
		rec.info.FallbackReason = p.rdmaReason // why there were no lanes to offer
	}
	rec.info.Result = &Result{CRC32C: in.CRC32C, FinalPath: c.FinalPath, Duration: now.Sub(rec.info.Started),
		Setup: p.preparedAt.Sub(rec.info.Started), Commit: now.Sub(p.preparedAt)}
	rec.mu.Unlock()
	return nil
}

// validInline checks an inline request before anything is created.
func validInline(req PrepareRequest) error {
	in := req.Inline
	switch {
	case in == nil:
		return nil
	case req.DestRegion != nil:
		return fmt.Errorf("%w: inline bytes for a region window (inline is for files)", ErrInvalid)
	case req.Tree != nil:
		return fmt.Errorf("%w: inline bytes with a tree manifest (inline is for single files)", ErrInvalid)
	case len(req.MACKey) != 0:
		return fmt.Errorf("%w: inline bytes with a whole-file MAC key (a MAC travels in Commit)", ErrInvalid)
	case int64(len(in.Bytes)) != req.Size:
		return fmt.Errorf("%w: %d inline bytes for a %d-byte file", ErrInvalid, len(in.Bytes), req.Size)
	case req.Size > MaxInlineSize || req.Size > req.ChunkSize:
		return fmt.Errorf("%w: %d inline bytes exceed the limit of %d (send larger files over the data channel)", ErrInvalid, req.Size, min(MaxInlineSize, req.ChunkSize))
	}
	return nil
}

// landInline writes a Prepare's inline bytes into the partial file, reads
// them back and checks them against the source's CRC32C like any chunk, then
// commits: the reply to that Prepare says so.
func (n *Node) landInline(ctx context.Context, in *incoming, req PrepareRequest, resp PrepareResponse) (PrepareResponse, error) {
	c := chunk.Chunk{Index: 0, Offset: req.SourceOffset, Length: uint32(req.Size), CRC: req.Inline.CRC32C}
	off, err := in.Admit(c)
	if err == nil {
		err = writeVerified(in.File(), off, req.Inline.Bytes, c.CRC)
	}
	in.Landed(c, err)
	if err != nil {
		n.abortIncoming(in.rec, StateFailed, err, true)
		return PrepareResponse{}, err
	}
	cr, err := n.Commit(ctx, CommitRequest{ID: req.ID, Size: req.Size, CRC32C: c.CRC})
	if err != nil {
		return PrepareResponse{}, err
	}
	resp.Committed = &cr
	resp.TCP = TCPChannel{}
	return resp, nil
}

// writeVerified writes b at off and checks what the file then holds against
// want: what is verified is what landed, as on the data channels.
func writeVerified(f interface {
	WriteAt([]byte, int64) (int, error)
	ReadAt([]byte, int64) (int, error)
}, off int64, b []byte, want uint32) error {
	if _, err := f.WriteAt(b, off); err != nil {
		return fmt.Errorf("%w: writing inline bytes: %w", chunk.ErrReceiverIO, err)
	}
	back := make([]byte, len(b))
	if _, err := f.ReadAt(back, off); err != nil {
		return fmt.Errorf("%w: reading inline bytes back: %w", chunk.ErrReceiverIO, err)
	}
	if got := crc32c.Checksum(back); got != want {
		return fmt.Errorf("%w: inline bytes have CRC32C %08x, the source sent %08x", ErrCorrupt, got, want)
	}
	return nil
}
