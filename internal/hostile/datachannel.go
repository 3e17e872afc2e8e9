// Package hostile is rxfer's hostile-peer test support: fakes of the peers a
// node talks to (a source, a destination, a data-channel sender) that send
// whatever a test asks for, so the cases in this package can act as a
// compromised or broken peer against a real node.
package hostile

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The TCP data channel's wire format (fallback/doc.go, version 2), written out
// here byte by byte rather than borrowed from package fallback, so a test can
// send frames the real sender never would. A token is the 48 bytes of the
// Prepare reply: a 16-byte id, presented on the wire, and a 32-byte secret
// that keys the preamble's proof and the tags of headers and acks.
const (
	preambleLen = 72 // "RXFD" version(2) flags(2) id(16) nonce(16) proof(32)
	replyLen    = 8  // "RXFR" status(1) reserved(3)
	headerLen   = 24 // "RXFC" index(4) offset(8) length(4) crc(4), then a tag
	ackLen      = 8  // index(4) status(1) reserved(3), then a tag
	tagLen      = 16 // HMAC-SHA256(direction key, seq ‖ frame), truncated
	wireVersion = 2
)

// Preamble reply statuses of the data channel.
const (
	ReplyOK           byte = 0
	ReplyUnknownToken byte = 1
	ReplyBadVersion   byte = 2
)

// ErrRefused reports a data connection the receiver did not accept after its
// preamble; the wrapped message names the reply status.
var ErrRefused = errors.New("hostile: data connection refused")

// DataConn is a raw client of a node's TCP data channel: it presents a token
// and then sends chunk headers and payloads exactly as told, reading the
// receiver's acknowledgements one by one.
type DataConn struct {
	c             *net.TCPConn
	outKey, inKey []byte
	outSeq, inSeq uint64
}

func hmacOf(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// Preamble returns the 72 bytes a data connection starts with: token's id,
// nonce, and the proof keyed by token's secret.
func Preamble(token []byte, nonce [16]byte) []byte {
	b := append([]byte("RXFD"), 0, wireVersion, 0, 0)
	b = append(b, token[:16]...)
	b = append(b, nonce[:]...)
	return append(b, hmacOf(token[16:], []byte("rxfer data v2 preamble"), b)...)
}

// tag is the tag of the next frame of a direction.
func tag(key []byte, seq *uint64, frame []byte) []byte {
	s := binary.BigEndian.AppendUint64(nil, *seq)
	*seq++
	return hmacOf(key, s, frame)[:tagLen]
}

// ChunkHeader returns the 24-byte header of a chunk.
func ChunkHeader(index uint32, offset int64, length, crc uint32) []byte {
	b := []byte("RXFC")
	b = binary.BigEndian.AppendUint32(b, index)
	b = binary.BigEndian.AppendUint64(b, uint64(offset))
	b = binary.BigEndian.AppendUint32(b, length)
	return binary.BigEndian.AppendUint32(b, crc)
}

// DialData connects to the data address addr, presents token and reads the
// receiver's reply: a refused token gives an error wrapping ErrRefused.
func DialData(addr string, token []byte) (*DataConn, error) {
	if len(token) != 48 {
		return nil, fmt.Errorf("hostile: a %d-byte token, want 48", len(token))
	}
	var nonce [16]byte
	rand.Read(nonce[:])
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	dir := func(label string) []byte { return hmacOf(token[16:], []byte(label), token[:16], nonce[:]) }
	d := &DataConn{c: nc.(*net.TCPConn), outKey: dir("rxfer data v2 sender->receiver"), inKey: dir("rxfer data v2 receiver->sender")}
	if err := d.Write(Preamble(token, nonce)); err != nil {
		d.Close()
		return nil, err
	}
	var r [replyLen]byte
	if _, err := io.ReadFull(d.c, r[:]); err != nil {
		d.Close()
		return nil, fmt.Errorf("reading the preamble reply: %w", err)
	}
	if string(r[:4]) != "RXFR" || r[4] != ReplyOK {
		d.Close()
		return nil, fmt.Errorf("%w: reply %q status %d", ErrRefused, r[:4], r[4])
	}
	return d, nil
}

// Write sends raw bytes on the connection.
func (d *DataConn) Write(b []byte) error {
	_, err := d.c.Write(b)
	return err
}

// SendHeader sends a chunk header with its tag.
func (d *DataConn) SendHeader(index uint32, offset int64, length, crc uint32) error {
	h := ChunkHeader(index, offset, length, crc)
	return d.Write(append(h, tag(d.outKey, &d.outSeq, h)...))
}

// SendChunk sends a chunk header followed by payload; the header's length is
// len(payload).
func (d *DataConn) SendChunk(index uint32, offset int64, crc uint32, payload []byte) error {
	if err := d.SendHeader(index, offset, uint32(len(payload)), crc); err != nil {
		return err
	}
	return d.Write(payload)
}

// Ack is one acknowledgement from the receiver.
type Ack struct {
	Index  uint32
	Status uint8 // a chunk.Status
}

// ReadAck reads the next acknowledgement. An error means the receiver closed
// the connection (io.EOF, a reset) or sent a malformed ack.
func (d *DataConn) ReadAck() (Ack, error) {
	var b [ackLen + tagLen]byte
	if _, err := io.ReadFull(d.c, b[:]); err != nil {
		return Ack{}, err
	}
	if !hmac.Equal(tag(d.inKey, &d.inSeq, b[:ackLen]), b[ackLen:]) {
		return Ack{}, fmt.Errorf("ack % x fails authentication", b[:ackLen])
	}
	if b[5]|b[6]|b[7] != 0 {
		return Ack{}, fmt.Errorf("malformed ack % x", b)
	}
	return Ack{Index: binary.BigEndian.Uint32(b[:4]), Status: b[4]}, nil
}

// CloseWrite half-closes the connection: the receiver sees a clean end
// between chunks.
func (d *DataConn) CloseWrite() error { return d.c.CloseWrite() }

// Close closes the connection.
func (d *DataConn) Close() error { return d.c.Close() }
