package transfer

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/rxfer/rxfer/chunk"
)

// The sink both transports land chunks through claims each chunk: one
// sender at a time, and a verified chunk is final (issue 12, finding 2).
func TestSinkClaimsChunks(t *testing.T) {
	p := newPair(t, testKnobs{})
	const cs = MinChunkSize
	if _, err := p.dst.Prepare(context.Background(), PrepareRequest{ID: "claims", SourceNode: "src", DestPath: "f",
		Size: 2 * cs, ChunkSize: cs, Policy: PolicyTCP}); err != nil {
		t.Fatal(err)
	}
	rec, err := p.dst.incomingRecord("claims")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.dst.Abort(context.Background(), "claims", "test", true) })
	in := rec.in
	c0 := chunk.Chunk{Index: 0, Offset: 0, Length: cs, CRC: 1}
	admit := func(c chunk.Chunk, want error) {
		t.Helper()
		if _, err := in.Admit(c); want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Fatalf("Admit(chunk %d at %d+%d) = %v, want %v", c.Index, c.Offset, c.Length, err, want)
		}
	}
	admit(c0, nil)
	admit(c0, chunk.ErrInFlight)                                    // claimed by the first
	admit(chunk.Chunk{Index: 1, Offset: 0, Length: cs}, ErrInvalid) // chunk 1 aimed at chunk 0's range
	in.Landed(c0, fmt.Errorf("chunk 0: %w", chunk.ErrChecksum))
	admit(c0, nil) // a failed chunk may be sent again
	in.Landed(c0, nil)
	admit(c0, chunk.ErrAlreadyVerified)
	if got := chunk.RefusalStatus(func() error { _, err := in.Admit(c0); return err }()); got != chunk.StatusVerified {
		t.Fatalf("a verified chunk's refusal is status %d, want %d", got, chunk.StatusVerified)
	}
}
