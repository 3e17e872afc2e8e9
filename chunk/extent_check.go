package chunk

import (
	"fmt"
	"math"
)

// CheckExtents returns an error naming the problem when exts cannot hold
// chunk c's bytes as [ExtentSink] promises: an extent with bytes but no
// file, or with Data (a sink's extents are written to), a negative offset
// or length, an end past the largest file offset, or lengths that do not
// add up to c.Length. Transports check what a Sink or Layout returned
// before a byte moves, so a wrong list (a bug of the Sink or Layout) never
// writes or sends past its extents. Zero-length extents are allowed, with
// or without a file.
func CheckExtents(c Chunk, exts []Extent) error { return checkExtents(c, exts, false) }

// CheckLayout is CheckExtents for a [Layout]'s answer, whose extents may
// hold Data instead of a file (then exactly Length bytes of it).
func CheckLayout(c Chunk, exts []Extent) error { return checkExtents(c, exts, true) }

func checkExtents(c Chunk, exts []Extent, layout bool) error {
	var sum int64
	for i, e := range exts {
		switch {
		case e.Offset < 0 || e.Length < 0:
			return fmt.Errorf("extent %d of chunk %d has offset %d and length %d (neither may be negative)", i, c.Index, e.Offset, e.Length)
		case e.Data != nil && !layout:
			return fmt.Errorf("extent %d of chunk %d holds its bytes in memory (Data); a sink's extents must be files", i, c.Index)
		case e.Data != nil && int64(len(e.Data)) != e.Length:
			return fmt.Errorf("extent %d of chunk %d has %d bytes of Data but length %d", i, c.Index, len(e.Data), e.Length)
		case e.Length == 0:
			continue
		case e.Data == nil && e.File == nil:
			return fmt.Errorf("extent %d of chunk %d has %d bytes but no file", i, c.Index, e.Length)
		case e.Offset > math.MaxInt64-e.Length:
			return fmt.Errorf("extent %d of chunk %d ends past the largest file offset (offset %d, length %d)", i, c.Index, e.Offset, e.Length)
		case e.Length > int64(c.Length)-sum:
			return fmt.Errorf("the extents of chunk %d add up to more than its %d bytes (at extent %d of %d)", c.Index, c.Length, i, len(exts))
		}
		sum += e.Length
	}
	if sum != int64(c.Length) {
		return fmt.Errorf("the extents of chunk %d add up to %d bytes, not its %d", c.Index, sum, c.Length)
	}
	return nil
}
