package fallback

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/rxfer/rxfer/chunk"
)

// Sentinel errors of the TCP data channel. Errors returned or reported by this package
// wrap one of them, a verdict of package chunk ([chunk.ErrChecksum],
// [chunk.ErrReceiverIO], [chunk.ErrRejected]), a context error or a network/OS error,
// so callers can use errors.Is.
var (
	// ErrUnknownToken reports that the receiver does not know (or no longer accepts) the
	// token presented on a data connection, or that the connection did not prove it
	// holds the token's secret.
	ErrUnknownToken = errors.New("fallback: unknown data-channel token")
	// ErrBadHeader reports a malformed preamble, chunk header or ack (wrong magic,
	// unsupported version, impossible field values).
	ErrBadHeader = errors.New("fallback: malformed data-channel header")
	// ErrStreamBroken reports that a data connection failed (dial, handshake, reset,
	// closed by the receiver) while chunks were in flight on it.
	ErrStreamBroken = errors.New("fallback: data connection failed")
	// ErrEncryptionRequired reports that the receiver accepts only encrypted
	// (TLS) data connections for the transfer.
	ErrEncryptionRequired = errors.New("fallback: the receiver requires an encrypted data connection")
	// ErrClosed reports use of a closed Listener.
	ErrClosed = errors.New("fallback: listener closed")
)

// Wire format constants; see the package documentation.
const (
	protoVersion = 2

	preambleLen = 72 // magic(4) version(2) flags(2) id(16) nonce(16) proof(32)
	replyLen    = 8  // magic(4) status(1) reserved(3)
	headerLen   = 24 // magic(4) index(4) offset(8) length(4) crc(4), then a tag
	ackLen      = 8  // index(4) status(1) reserved(3), then a tag
	tagLen      = 16 // truncated HMAC-SHA256 after every header and ack
	nonceLen    = 16
	proofLen    = 32
)

var (
	preambleMagic = [4]byte{'R', 'X', 'F', 'D'}
	replyMagic    = [4]byte{'R', 'X', 'F', 'R'}
	headerMagic   = [4]byte{'R', 'X', 'F', 'C'}
)

// Preamble reply status.
const (
	replyOK           byte = 0
	replyUnknownToken byte = 1 // unknown id, wrong proof or a replayed preamble
	replyBadVersion   byte = 2
	replyBusy         byte = 3 // too many unauthenticated connections
	replyNeedsTLS     byte = 4 // the transfer accepts only encrypted connections
)

// preamble is a parsed connection preamble.
type preamble struct {
	id    [16]byte
	nonce [nonceLen]byte
	proof [proofLen]byte
}

// appendPreamble appends the preamble that presents tok with a fresh nonce: the
// token's id, the nonce and an HMAC over them keyed by the token's secret.
func appendPreamble(b []byte, tok Token, nonce [nonceLen]byte) []byte {
	start := len(b)
	b = append(b, preambleMagic[:]...)
	b = binary.BigEndian.AppendUint16(b, protoVersion)
	b = binary.BigEndian.AppendUint16(b, 0)
	id := tok.id()
	b = append(b, id[:]...)
	b = append(b, nonce[:]...)
	return append(b, preambleProof(tok, b[start:])...)
}

// parsePreamble decodes a connection preamble; it does not check the proof
// ([checkProof] does, once the id named a token). The returned version is valid
// whenever the magic matched, so the receiver can answer replyBadVersion.
func parsePreamble(b []byte) (p preamble, version uint16, err error) {
	if len(b) != preambleLen {
		return p, 0, fmt.Errorf("%w: preamble is %d bytes, want %d", ErrBadHeader, len(b), preambleLen)
	}
	if [4]byte(b[0:4]) != preambleMagic {
		return p, 0, fmt.Errorf("%w: bad preamble magic", ErrBadHeader)
	}
	version = binary.BigEndian.Uint16(b[4:6])
	if version != protoVersion {
		return p, version, fmt.Errorf("%w: unsupported protocol version %d", ErrBadHeader, version)
	}
	if flags := binary.BigEndian.Uint16(b[6:8]); flags != 0 {
		return p, version, fmt.Errorf("%w: unknown preamble flags %#x", ErrBadHeader, flags)
	}
	p.id, p.nonce, p.proof = [16]byte(b[8:24]), [nonceLen]byte(b[24:40]), [proofLen]byte(b[40:72])
	return p, version, nil
}

func appendReply(b []byte, status byte) []byte {
	b = append(b, replyMagic[:]...)
	return append(b, status, 0, 0, 0)
}

func parseReply(b []byte) error {
	if len(b) != replyLen || [4]byte(b[0:4]) != replyMagic {
		return fmt.Errorf("%w: bad preamble reply", ErrBadHeader)
	}
	// Reserved bytes must be zero, as in acks: a receiver that sets them speaks
	// something this sender does not understand.
	if b[5]|b[6]|b[7] != 0 {
		return fmt.Errorf("%w: preamble reply has reserved bytes %x", ErrBadHeader, b[5:8])
	}
	switch b[4] {
	case replyOK:
		return nil
	case replyUnknownToken:
		return ErrUnknownToken
	case replyBadVersion:
		return fmt.Errorf("%w: receiver does not speak protocol version %d", ErrBadHeader, protoVersion)
	case replyBusy:
		return ErrReceiverBusy
	case replyNeedsTLS:
		return ErrEncryptionRequired
	default:
		return fmt.Errorf("%w: unknown preamble reply status %d", ErrBadHeader, b[4])
	}
}

func appendHeader(b []byte, c chunk.Chunk) []byte {
	b = append(b, headerMagic[:]...)
	b = binary.BigEndian.AppendUint32(b, c.Index)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Offset))
	b = binary.BigEndian.AppendUint32(b, c.Length)
	return binary.BigEndian.AppendUint32(b, c.CRC)
}

// parseHeader decodes a chunk header. It checks only what holds for every transfer
// (magic, non-empty, offset+length representable); Sink.Admit checks the rest.
func parseHeader(b []byte) (chunk.Chunk, error) {
	if len(b) != headerLen {
		return chunk.Chunk{}, fmt.Errorf("%w: chunk header is %d bytes, want %d", ErrBadHeader, len(b), headerLen)
	}
	if [4]byte(b[0:4]) != headerMagic {
		return chunk.Chunk{}, fmt.Errorf("%w: bad chunk header magic", ErrBadHeader)
	}
	c := chunk.Chunk{
		Index:  binary.BigEndian.Uint32(b[4:8]),
		Offset: int64(binary.BigEndian.Uint64(b[8:16])),
		Length: binary.BigEndian.Uint32(b[16:20]),
		CRC:    binary.BigEndian.Uint32(b[20:24]),
	}
	if c.Offset < 0 || c.Length == 0 || c.Offset > math.MaxInt64-int64(c.Length) {
		return chunk.Chunk{}, fmt.Errorf("%w: chunk %d has offset %d length %d", ErrBadHeader, c.Index, c.Offset, c.Length)
	}
	return c, nil
}

func appendAck(b []byte, index uint32, status chunk.Status) []byte {
	b = binary.BigEndian.AppendUint32(b, index)
	return append(b, byte(status), 0, 0, 0)
}

func parseAck(b []byte) (index uint32, status chunk.Status, err error) {
	if len(b) != ackLen {
		return 0, 0, fmt.Errorf("%w: ack is %d bytes, want %d", ErrBadHeader, len(b), ackLen)
	}
	index, status = binary.BigEndian.Uint32(b[0:4]), chunk.Status(b[4])
	if !status.Valid() || b[5]|b[6]|b[7] != 0 {
		return 0, 0, fmt.Errorf("%w: ack for chunk %d has status %d", ErrBadHeader, index, status)
	}
	return index, status, nil
}
