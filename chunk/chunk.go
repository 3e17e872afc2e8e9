// Package chunk is the contract between rxfer's engine and its two
// transports, RDMA (package rdma) and TCP (package fallback): the chunk
// descriptor a sender moves, the [Sink] a receiver lands chunks in, the
// verdicts a receiver sends back and the sentinel errors they map to.
// Both transports import it and neither imports the other, so the engine
// can hand the same chunks to either and treat their verdicts alike.
package chunk

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// Chunk is one piece of a transfer.
type Chunk struct {
	Index  uint32
	Offset int64 // in the source; a destination window may start elsewhere (Sink.Admit)
	Length uint32
	CRC    uint32 // CRC32C (Castagnoli) of the chunk's bytes, computed by the sender (internal/crc32c)
}

// Sink is the receiving side of one transfer. For every chunk that Admit
// accepts, Landed is called exactly once, so a Sink can account for every
// chunk it let in.
type Sink interface {
	// File is the destination file; chunk bytes are written where Admit says.
	// It must be opened O_RDWR (a receiver may read each chunk back to verify it).
	File() *os.File
	// Admit validates a chunk before its bytes are taken (bounds, index) and
	// claims its index: it returns the offset in File where the chunk's
	// bytes go (Chunk.Offset is the source's offset; a destination window
	// may start elsewhere). A non-nil error refuses it before a byte lands:
	// one wrapping ErrAlreadyVerified or ErrInFlight when the index was
	// claimed before (the sender is told so, RefusalStatus), any other
	// ErrRejected. The claim ends with Landed: with a nil error the chunk
	// is final, and every later Admit of it is refused.
	Admit(c Chunk) (fileOffset int64, err error)
	// Landed is called once the chunk's bytes are in place and were checked:
	// err is nil, or wraps ErrChecksum on a CRC mismatch, ErrReceiverIO when
	// the destination could not be written or read, or a transport error
	// when the connection failed before all bytes arrived. It may be called
	// concurrently.
	Landed(c Chunk, err error)
}

// Verdict errors: what a sender's done callback sees for a chunk the
// receiver did not accept, whichever transport carried it.
var (
	// ErrChecksum means the CRC32C of the bytes that landed does not match
	// the CRC the sender sent. The chunk may be re-sent.
	ErrChecksum = errors.New("CRC32C mismatch")
	// ErrReceiverIO means the receiver could not write (or read back) the
	// chunk in its destination, for example because the disk is full.
	ErrReceiverIO = errors.New("receiver I/O error")
	// ErrRejected means the receiver refused the chunk (Sink.Admit, or a
	// malformed message about it).
	ErrRejected = errors.New("rejected by the receiver")
	// ErrAlreadyVerified means the chunk was verified before: a verified
	// chunk is final, so the receiver wrote nothing of this send. A Sink's
	// Admit returns it (wrapped) for such a chunk; a sender may count the
	// chunk as verified.
	ErrAlreadyVerified = errors.New("chunk already verified")
	// ErrInFlight means another connection is landing the same chunk: the
	// receiver wrote nothing of this send. A Sink's Admit returns it
	// (wrapped); a sender may send the chunk again once the other send is
	// answered.
	ErrInFlight = errors.New("chunk in flight on another connection")
)

// Status is a receiver's verdict on one chunk as both wire protocols carry
// it: one byte in an acknowledgement.
type Status uint8

// Statuses; the numbers are on the wire.
const (
	StatusOK       Status = 0 // landed and verified
	StatusChecksum Status = 1 // CRC32C mismatch (ErrChecksum)
	StatusIO       Status = 2 // the destination could not be written (ErrReceiverIO)
	StatusRejected Status = 3 // refused (ErrRejected)
	StatusVerified Status = 4 // already verified; nothing written (ErrAlreadyVerified)
	StatusInFlight Status = 5 // claimed by another connection; nothing written (ErrInFlight)
)

// Valid reports whether s is one of the statuses above; a larger value in
// an acknowledgement is a protocol error.
func (s Status) Valid() bool { return s <= StatusInFlight }

// RefusalStatus is the status that answers a chunk Sink.Admit refused with
// err: StatusVerified or StatusInFlight for a chunk claimed before (the
// connection may go on), StatusIO when the destination could not open or
// create where the chunk goes (ErrReceiverIO: a full or failing file
// system), otherwise StatusRejected.
func RefusalStatus(err error) Status {
	switch {
	case errors.Is(err, ErrAlreadyVerified):
		return StatusVerified
	case errors.Is(err, ErrInFlight):
		return StatusInFlight
	case errors.Is(err, ErrReceiverIO):
		return StatusIO
	default:
		return StatusRejected
	}
}

// Err returns the sentinel error of s (nil for StatusOK).
func (s Status) Err() error {
	switch s {
	case StatusOK:
		return nil
	case StatusChecksum:
		return ErrChecksum
	case StatusIO:
		return ErrReceiverIO
	case StatusVerified:
		return ErrAlreadyVerified
	case StatusInFlight:
		return ErrInFlight
	default:
		return ErrRejected
	}
}

// Verdict is the error a sender's done callback gets for chunk c answered
// with status s: nil, or "chunk N: " and the sentinel of s.
func Verdict(c Chunk, s Status) error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("chunk %d: %w", c.Index, err)
	}
	return nil
}

// Drain answers every chunk still coming on chunks with err (prefixed with
// the chunk's index) until chunks is closed (it returns nil) or ctx ends
// (it returns ctx's cause). A sender that can no longer send calls it so
// that whoever feeds chunks never blocks, as both transports promise.
func Drain(ctx context.Context, chunks <-chan Chunk, done func(Chunk, error), err error) error {
	for {
		select {
		case c, ok := <-chunks:
			if !ok {
				return nil
			}
			done(c, fmt.Errorf("chunk %d: %w", c.Index, err))
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}
