package fallback

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/rxfer/rxfer/chunk"
)

// Encryption says how a data connection is protected.
type Encryption int

// Encryption modes of a data connection.
const (
	// EncryptionOff: plaintext; headers and acks authenticated (bind.go).
	EncryptionOff Encryption = iota
	// EncryptionTLS: TLS 1.3 in user space (crypto/tls): payload bytes are
	// copied through user space on both ends.
	EncryptionTLS
	// EncryptionKTLS: TLS 1.3 handshake in user space, records encrypted
	// and decrypted by the kernel (kTLS), so sendfile and splice stay zero-copy.
	EncryptionKTLS
)

// String returns "off", "tls" or "ktls".
func (e Encryption) String() string {
	switch e {
	case EncryptionOff:
		return "off"
	case EncryptionTLS:
		return "tls"
	case EncryptionKTLS:
		return "ktls"
	}
	return fmt.Sprintf("Encryption(%d)", int(e))
}

// ConnObserver may be implemented by a [chunk.Sink]: the [Listener] tells it how
// each data connection of its transfer is protected once the connection is
// accepted.
type ConnObserver interface {
	DataConnection(Encryption)
}

// dataConn is one data connection after its handshake: plaintext or kTLS
// (reads and writes on the socket itself, so sendfile and splice work), or
// user-space TLS.
type dataConn struct {
	tcp *net.TCPConn
	tls *tls.Conn // user-space TLS; nil when plaintext or kTLS
	enc Encryption
}

func (d *dataConn) Read(b []byte) (int, error) {
	if d.tls != nil {
		return d.tls.Read(b)
	}
	return d.tcp.Read(b)
}

func (d *dataConn) Write(b []byte) (int, error) {
	if d.tls != nil {
		return d.tls.Write(b)
	}
	return d.tcp.Write(b)
}

// zeroCopy reports whether the socket carries the stream's bytes as they are
// written to it (plaintext, or encrypted by the kernel).
func (d *dataConn) zeroCopy() bool { return d.tls == nil }

// Close closes the socket (never a TLS close_notify: a kTLS peer could not
// read that record, and the protocol's own end is a half-close between chunks).
func (d *dataConn) Close() error { return d.tcp.Close() }

// CloseWrite half-closes the socket: the receiver sees the end between chunks.
func (d *dataConn) CloseWrite() error { return d.tcp.CloseWrite() }

// copyBufferSize is the user-space TLS path's buffer for chunk payloads.
const copyBufferSize = 1 << 20

var copyPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// copyToFile is spliceToFile for a user-space TLS connection: it reads exactly
// n bytes from r and writes them into f at off. A write error wraps
// chunk.ErrReceiverIO.
func copyToFile(r io.Reader, f *os.File, off, n int64) error {
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	buf := *bp
	for n > 0 {
		k, err := io.ReadFull(r, buf[:min(n, int64(len(buf)))])
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if _, err := f.WriteAt(buf[:k], off); err != nil {
			return fmt.Errorf("%w: writing at offset %d: %w", chunk.ErrReceiverIO, off, err)
		}
		off += int64(k)
		n -= int64(k)
	}
	return nil
}

// copyToExtents is copyToFile for a chunk whose n bytes go to several extents
// (chunk.ExtentSink; chunk.CheckExtents passed): each buffer read from r is
// written across as many extents as it covers.
func copyToExtents(r io.Reader, exts []chunk.Extent, n int64) error {
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	buf := *bp
	var done int64 // bytes of exts[0] written
	for n > 0 {
		k, err := io.ReadFull(r, buf[:min(n, int64(len(buf)))])
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		n -= int64(k)
		for b := buf[:k]; len(b) > 0; {
			e := exts[0]
			if done == e.Length {
				exts, done = exts[1:], 0
				continue
			}
			m := min(int64(len(b)), e.Length-done)
			if _, err := e.File.WriteAt(b[:m], e.Offset+done); err != nil {
				return fmt.Errorf("%w: writing at offset %d: %w", chunk.ErrReceiverIO, e.Offset+done, err)
			}
			b, done = b[m:], done+m
		}
	}
	return nil
}

// prefixConn replays bytes already read from a connection before the rest of
// it: the listener reads one byte to tell a TLS ClientHello from a plaintext
// preamble.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
