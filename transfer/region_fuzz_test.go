package transfer

import (
	"errors"
	"math"
	"testing"
)

// FuzzRegionWindow checks region window arithmetic over any int64 inputs:
// no panic, every error is ErrOutOfRange (never something users would see
// as Internal), and an accepted window lies within the region and has the
// length the transfer asked for.
func FuzzRegionWindow(f *testing.F) {
	for _, s := range [][4]int64{
		{1 << 20, 0, 0, -1}, {1 << 20, 4096, 4096, 4096}, {1 << 20, 1 << 20, 0, -1}, {1 << 20, 1 << 20, 0, 0},
		{1 << 20, 1 << 62, 1 << 62, -1}, {1 << 20, math.MaxInt64, 1, -1}, {1 << 20, math.MaxInt64, 0, 1},
		{1 << 20, 1, math.MaxInt64, -1}, {1 << 20, -1, 10, -1}, {1 << 20, 0, -5, -1}, {1 << 20, 10, 0, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64 - 1, 1, -1}, {math.MaxInt64, 1, math.MaxInt64, 1}, {0, 0, 0, -1},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, size, offset, length, want int64) {
		if size < 0 {
			size = -(size + 1) // a region's size is never negative
		}
		if want < -1 {
			want = -1 // acquireRegion's callers pass -1 or a validated size
		}
		ref := RegionRef{Name: "r", Offset: offset, Length: length}
		off, n, err := regionWindow(size, ref, want)
		if err != nil {
			if !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("regionWindow(%d, %v, %d) = %v, want ErrOutOfRange", size, ref, want, err)
			}
			return
		}
		if off < 0 || n < 0 || off > size || n > size-off {
			t.Fatalf("regionWindow(%d, %v, %d) accepted window %d+%d outside the region", size, ref, want, off, n)
		}
		if want >= 0 && n != want || want < 0 && length != 0 && n != length {
			t.Fatalf("regionWindow(%d, %v, %d) = length %d, not what was asked", size, ref, want, n)
		}
	})
}
