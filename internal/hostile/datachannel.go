// Package hostile is rxfer's hostile-peer test support: fakes of the peers a
// node talks to (a source, a destination, a data-channel sender) that send
// whatever a test asks for, so the cases in this package can act as a
// compromised or broken peer against a real node.
package hostile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The TCP data channel's wire format (fallback/doc.go, version 1), written out
// here byte by byte rather than borrowed from package fallback, so a test can
// send frames the real sender never would.
const (
	preambleLen = 24 // "RXFD" version(2) flags(2) token(16)
	replyLen    = 8  // "RXFR" status(1) reserved(3)
	headerLen   = 24 // "RXFC" index(4) offset(8) length(4) crc(4)
	ackLen      = 8  // index(4) status(1) reserved(3)
	wireVersion = 1
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
	c *net.TCPConn
}

// Preamble returns the 24 bytes a data connection starts with.
func Preamble(token []byte) []byte {
	b := append([]byte("RXFD"), 0, wireVersion, 0, 0)
	return append(b, token...)
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
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	d := &DataConn{c: nc.(*net.TCPConn)}
	if err := d.Write(Preamble(token)); err != nil {
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

// SendChunk sends a chunk header followed by payload; the header's length is
// len(payload).
func (d *DataConn) SendChunk(index uint32, offset int64, crc uint32, payload []byte) error {
	if err := d.Write(ChunkHeader(index, offset, uint32(len(payload)), crc)); err != nil {
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
	var b [ackLen]byte
	if _, err := io.ReadFull(d.c, b[:]); err != nil {
		return Ack{}, err
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
