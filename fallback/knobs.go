package fallback

import "github.com/rxfer/rxfer/chunk"

// knobs are this package's test settings, in one place; production code
// never sets them.
var knobs struct {
	// corrupt, when it returns true for a chunk, makes the sender flip a bit
	// of the CRC it sends, so the receiver sees a mismatch (corruption on
	// the wire).
	corrupt func(chunk.Chunk) bool
}
