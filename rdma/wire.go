package rdma

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/rxfer/rxfer/chunk"
)

// Control messages travel as SENDs of exactly msgLen bytes (see doc.go).
const (
	msgLen = 32

	msgChunk = 1 // sender → receiver: a chunk's bytes are in a slot
	msgAck   = 2 // receiver → sender: the slot is free again, with a verdict

	wireVersion = 1
)

var (
	chunkMagic = [4]byte{'R', 'X', 'R', 'C'}
	ackMagic   = [4]byte{'R', 'X', 'R', 'A'}
)

// errBadMessage means a control message could not be parsed.
var errBadMessage = errors.New("rdma: malformed control message")

// ErrBroken, besides the verdicts of package chunk (chunk.ErrChecksum,
// chunk.ErrReceiverIO, chunk.ErrRejected: a malformed control message is
// rejected too), is what a sender's done callback may see.
var (
	// ErrBroken means the queue pair failed (a completion error, a protocol
	// violation) while the chunk was in flight or before it could be sent.
	ErrBroken = errors.New("rdma: connection broken")
)

// chunkMsg announces a chunk written into a slot.
type chunkMsg struct {
	Slot  uint32
	Chunk chunk.Chunk
}

// ackMsg frees a slot. RKey is nonzero only in a window receiver's
// StatusChecksum ack: the slot's new rkey (the old one died when the slot
// was deregistered to verify it).
type ackMsg struct {
	Slot   uint32
	Index  uint32
	Status chunk.Status
	RKey   uint32
}

// Layout (little-endian, the byte order of every RDMA host rxfer runs on —
// fixed, not native); reserved bytes are zero and a chunk is never empty:
//
//	chunk: magic "RXRC" | type u8 = 1 | version u8 = 1 | reserved u16 | slot u32 |
//	       index u32 | offset i64 | length u32 | crc32c u32                    32 bytes
//	ack:   magic "RXRA" | type u8 = 2 | version u8 = 1 | status u8 | reserved u8 |
//	       slot u32 | index u32 | rkey u32 | reserved (12)                     32 bytes

func putChunkMsg(b []byte, m chunkMsg) {
	clear(b[:msgLen])
	copy(b, chunkMagic[:])
	b[4], b[5] = msgChunk, wireVersion
	le := binary.LittleEndian
	le.PutUint32(b[8:], m.Slot)
	le.PutUint32(b[12:], m.Chunk.Index)
	le.PutUint64(b[16:], uint64(m.Chunk.Offset))
	le.PutUint32(b[24:], m.Chunk.Length)
	le.PutUint32(b[28:], m.Chunk.CRC)
}

func parseChunkMsg(b []byte) (chunkMsg, error) {
	if len(b) != msgLen || [4]byte(b[:4]) != chunkMagic || b[4] != msgChunk || b[5] != wireVersion {
		return chunkMsg{}, fmt.Errorf("%w: not a version %d chunk message (%d bytes)", errBadMessage, wireVersion, len(b))
	}
	le := binary.LittleEndian
	m := chunkMsg{Slot: le.Uint32(b[8:]), Chunk: chunk.Chunk{
		Index: le.Uint32(b[12:]), Offset: int64(le.Uint64(b[16:])), Length: le.Uint32(b[24:]), CRC: le.Uint32(b[28:]),
	}}
	if b[6]|b[7] != 0 {
		return chunkMsg{}, fmt.Errorf("%w: chunk message has reserved bytes %x", errBadMessage, b[6:8])
	}
	if c := m.Chunk; c.Offset < 0 || c.Length == 0 || c.Offset+int64(c.Length) < c.Offset {
		return m, fmt.Errorf("%w: chunk %d: bad range offset %d length %d", errBadMessage, c.Index, c.Offset, c.Length)
	}
	return m, nil
}

func putAckMsg(b []byte, m ackMsg) {
	clear(b[:msgLen])
	copy(b, ackMagic[:])
	b[4], b[5], b[6] = msgAck, wireVersion, byte(m.Status)
	binary.LittleEndian.PutUint32(b[8:], m.Slot)
	binary.LittleEndian.PutUint32(b[12:], m.Index)
	binary.LittleEndian.PutUint32(b[16:], m.RKey)
}

func parseAckMsg(b []byte) (ackMsg, error) {
	if len(b) != msgLen || [4]byte(b[:4]) != ackMagic || b[4] != msgAck || b[5] != wireVersion {
		return ackMsg{}, fmt.Errorf("%w: not a version %d ack (%d bytes)", errBadMessage, wireVersion, len(b))
	}
	le := binary.LittleEndian
	m := ackMsg{Slot: le.Uint32(b[8:]), Index: le.Uint32(b[12:]), Status: chunk.Status(b[6]), RKey: le.Uint32(b[16:])}
	if !m.Status.Valid() {
		return m, fmt.Errorf("%w: unknown ack status %d", errBadMessage, m.Status)
	}
	if m.RKey != 0 && m.Status != chunk.StatusChecksum {
		return m, fmt.Errorf("%w: ack for chunk %d carries an rkey with status %d", errBadMessage, m.Index, m.Status)
	}
	if b[7] != 0 || !allZero(b[20:]) {
		return m, fmt.Errorf("%w: ack for chunk %d has reserved bytes set", errBadMessage, m.Index)
	}
	return m, nil
}

// allZero reports whether b holds only zero bytes. Reserved bytes must be zero
// so that a peer speaking an extension this version does not know is refused.
func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// ackError is the done() verdict for an ack status; a checksum mismatch
// names the CRC, as the slot's bytes are gone once the slot is reused.
func ackError(c chunk.Chunk, status chunk.Status) error {
	if status == chunk.StatusChecksum {
		return fmt.Errorf("rdma: chunk %d: %w (receiver's staging slot does not match crc32c %08x)", c.Index, chunk.ErrChecksum, c.CRC)
	}
	return chunk.Verdict(c, status)
}
