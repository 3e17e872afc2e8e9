package crc32c

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// Every implementation agrees with hash/crc32 on every length up to 300
// bytes (all tails and alignments) and on large random buffers, and Update
// composes across arbitrary splits.
func TestImplementationsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20+13)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	for _, im := range impls {
		for n := 0; n <= 300; n++ {
			for off := 0; off < 8; off++ {
				b := buf[off : off+n]
				if got, want := im.update(0, b), crc32.Checksum(b, tab); got != want {
					t.Fatalf("%s: %d bytes at offset %d: %08x, want %08x", im.name, n, off, got, want)
				}
			}
		}
		want := crc32.Checksum(buf, tab)
		if got := im.update(0, buf); got != want {
			t.Fatalf("%s: 1 MiB: %08x, want %08x", im.name, got, want)
		}
		for range 20 {
			cut := r.IntN(len(buf))
			if got := im.update(im.update(0, buf[:cut]), buf[cut:]); got != want {
				t.Fatalf("%s: split at %d: %08x, want %08x", im.name, cut, got, want)
			}
		}
	}
	// The check value from the CRC catalogue: CRC-32C("123456789").
	if got := Checksum([]byte("123456789")); got != 0xe3069283 {
		t.Fatalf("Checksum(123456789) = %08x, want e3069283", got)
	}
	t.Logf("in use here: %s", Implementation())
}

func BenchmarkImplementations(b *testing.B) {
	buf := make([]byte, 1<<20)
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				im.update(0, buf)
			}
		})
	}
}
