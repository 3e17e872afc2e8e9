package transfer

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
	"github.com/rxfer/rxfer/internal/testbedenv"
	"github.com/rxfer/rxfer/rdma"
)

// Issue 12, finding 2, RDMA window mode: a source whose chunks were all
// verified writes chunk 1 again through its rkey with other bytes. A verified
// chunk is final: the WRITE must not land (its slot was deregistered before
// it was verified), and commit publishes the verified bytes. (Before, the
// window stayed registered until commit, the rewrite landed and commit had
// to read the whole window back to notice.)
func TestWindowVerifiedChunkIsFinal(t *testing.T) {
	p := newPair(t, testKnobs{})
	needRDMA(t, p.src)
	ctx := context.Background()
	const cs = 64 << 10
	const size = 4 * cs
	if _, err := p.dst.RegisterRegion("win", size, ""); err != nil {
		t.Fatal(err)
	}
	lanes, reason := p.src.offerLanes(PolicyRDMA, "", 1)
	if len(lanes) == 0 {
		t.Fatalf("no RDMA lane: %s", reason)
	}
	s := lanes[0]
	t.Cleanup(func() { s.Close() })
	resp, err := p.dst.Prepare(ctx, PrepareRequest{ID: "rewrite", SourceNode: "src", Size: size, ChunkSize: cs,
		Policy: PolicyRDMA, DestRegion: &RegionRef{Name: "win"}, RDMA: offers(lanes)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.RDMA) != 1 || !resp.RDMA[0].Direct {
		t.Fatalf("destination answered %+v, want one window lane", resp.RDMA)
	}
	ch := resp.RDMA[0]
	if _, err := s.Attach(rdma.Answer{Endpoint: ch.Endpoint, Slots: ch.Slots, Window: true}); err != nil {
		t.Fatal(err)
	}
	plan := ChunkPlan{Size: size, ChunkSize: cs}
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(12, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	mem := bytes.Clone(data) // the source's memory: the sender copies from it
	// send sends chunks i of mem with their CRCs and returns the verdicts
	// and Send's error.
	send := func(idx ...int) (map[uint32]error, error) {
		q := make(chan chunk.Chunk, len(idx))
		for _, i := range idx {
			off, n := plan.Span(i)
			q <- chunk.Chunk{Index: uint32(i), Offset: off, Length: uint32(n), CRC: crc32c.Checksum(mem[off : off+n])}
		}
		close(q)
		var mu sync.Mutex
		verdicts := make(map[uint32]error)
		err := s.Send(ctx, rdma.Source{Bytes: mem}, q, func(c chunk.Chunk, err error) {
			mu.Lock()
			verdicts[c.Index] = err
			mu.Unlock()
		}, 4)
		return verdicts, err
	}
	verdicts, err := send(0, 1, 2, 3)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	for i, err := range verdicts {
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	// Rewrite verified chunk 1 through the window.
	for i := cs; i < 2*cs; i++ {
		mem[i] ^= 0x5a
	}
	verdicts, err = send(1)
	t.Logf("rewriting verified chunk 1: verdict %v, send: %v", verdicts[1], err)
	if err == nil && verdicts[1] == nil {
		t.Fatal("rewriting verified chunk 1 was accepted")
	}
	if got := regionBytes(t, p.dst, "win", 0, size); !bytes.Equal(got, data) {
		t.Fatalf("the rewrite of a verified chunk landed in the window (first difference at byte %d)", testbedenv.FirstDiff(got, data))
	}
	if _, err = p.dst.Commit(ctx, CommitRequest{ID: "rewrite", Size: size, CRC32C: crc32c.Checksum(data)}); err != nil {
		t.Fatalf("commit of the verified bytes: %v", err)
	}
	if got := regionBytes(t, p.dst, "win", 0, size); !bytes.Equal(got, data) {
		t.Fatalf("the committed window differs from the verified bytes at byte %d", testbedenv.FirstDiff(got, data))
	}
}
