package transfer

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"

	"github.com/rxfer/rxfer/internal/crc32c"
)

func TestCombineMatchesWholeFileCRC(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 1<<20+7)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for _, cs := range []int64{1, 7, 4096, 65536, 1 << 20, 2 << 20} {
		p := ChunkPlan{Size: int64(len(data)), ChunkSize: cs}
		crcs := make([]uint32, p.Count())
		for i := range crcs {
			off, n := p.Span(i)
			crcs[i] = crc32c.Checksum(data[off : off+n])
		}
		want := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
		if got := p.Combine(crcs); got != want {
			t.Errorf("chunk size %d: combined %08x, whole-file %08x", cs, got, want)
		}
	}
}

func TestChunkPlan(t *testing.T) {
	tests := []struct {
		size, chunk int64
		count       int
		lastLen     int64
	}{
		{0, 4096, 0, 0},
		{1, 4096, 1, 1},
		{4096, 4096, 1, 4096},
		{4097, 4096, 2, 1},
		{3*4096 - 5, 4096, 3, 4091},
	}
	for _, tt := range tests {
		p := ChunkPlan{Size: tt.size, ChunkSize: tt.chunk}
		if got := p.Count(); got != tt.count {
			t.Errorf("Count(%d/%d) = %d, want %d", tt.size, tt.chunk, got, tt.count)
			continue
		}
		if tt.count > 0 {
			if _, n := p.Span(tt.count - 1); n != tt.lastLen {
				t.Errorf("last chunk of %d/%d has %d bytes, want %d", tt.size, tt.chunk, n, tt.lastLen)
			}
		}
	}
}

func BenchmarkCombine(b *testing.B) {
	p := ChunkPlan{Size: 128 << 20, ChunkSize: 1 << 20}
	crcs := make([]uint32, p.Count())
	for i := range crcs {
		crcs[i] = uint32(i) * 2654435761
	}
	for b.Loop() {
		p.Combine(crcs)
	}
}
