package rdma

import (
	"time"

	"github.com/rxfer/rxfer/chunk"
)

// knobs are this package's test settings, in one place; production code
// never sets them.
var knobs struct {
	// corrupt, when it returns true for a chunk, makes the sender flip a bit
	// of the CRC32C in the chunk's control message, as if its bytes had been
	// corrupted on the wire.
	corrupt func(chunk.Chunk) bool
	// verifyWorkers, when positive, overrides the number of a receiver's
	// verification workers (for measurements).
	verifyWorkers int
	// watchEvery, when positive, overrides how often a Pool checks its
	// parked connections' devices.
	watchEvery time.Duration
}
