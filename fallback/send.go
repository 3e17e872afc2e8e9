package fallback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rxfer/rxfer/chunk"
)

// SendMode is how the sender moves chunk bytes from the source file to the socket.
type SendMode int

const (
	// SendFile uses sendfile(2) with an explicit offset: no copy through user space.
	SendFile SendMode = iota
	// ReadWrite uses pread(2) into a 1 MiB buffer and write(2).
	ReadWrite
)

// String returns "sendfile" or "readwrite".
func (m SendMode) String() string {
	switch m {
	case SendFile:
		return "sendfile"
	case ReadWrite:
		return "readwrite"
	}
	return fmt.Sprintf("SendMode(%d)", int(m))
}

// ParseSendMode parses the form produced by [SendMode.String].
func ParseSendMode(s string) (SendMode, error) {
	switch s {
	case "sendfile":
		return SendFile, nil
	case "readwrite":
		return ReadWrite, nil
	}
	return 0, fmt.Errorf("fallback: unknown send mode %q (want sendfile or readwrite)", s)
}

// Defaults for [SendOptions], chosen by the measurements in README.md.
const (
	// DefaultStreams is the number of parallel data connections.
	DefaultStreams = 4
	// DefaultMode is the sender mode used when SendOptions.Mode is left zero.
	DefaultMode = SendFile
	// DefaultWindow is the number of unacknowledged chunks allowed per connection.
	DefaultWindow = 4
	// HandshakeTimeout bounds dialing plus the preamble exchange of one connection.
	HandshakeTimeout = 10 * time.Second
)

// SendOptions tune [Send]. The zero value is ready to use.
type SendOptions struct {
	Streams int      // parallel connections; 0 = DefaultStreams
	Mode    SendMode // SendFile (the zero value) or ReadWrite
	Window  int      // max unacked chunks per connection; 0 = DefaultWindow
	// Encrypt opens TLS 1.3 connections that trust only the certificate
	// whose SHA-256 is CertSHA256 (the receiver's [Listener.CertSHA256],
	// from the control plane). Payloads then go through crypto/tls (Mode
	// does not apply), or stay zero-copy where the kernel offers kTLS.
	Encrypt    bool
	CertSHA256 [32]byte
	// NoKTLS keeps encrypted connections on crypto/tls even where the
	// kernel offers kTLS.
	NoKTLS bool
	// Connected, if not nil, is told how each connection is protected once
	// the receiver accepted it.
	Connected func(Encryption)
	// Layout, when set, says where each chunk's bytes are (a directory
	// tree's chunks span several files): Send's src is then unused and may
	// be nil. Extents is asked once per chunk sent, before its header goes
	// out; an error (or extents that do not add up, chunk.CheckLayout)
	// answers that chunk with done(c, err) and the stream goes on.
	Layout chunk.Layout
}

const rwBufferSize = 1 << 20

var rwPool = sync.Pool{New: func() any { b := make([]byte, rwBufferSize); return &b }}

// Send opens opt.Streams connections to addr, presents tok on each, and sends the
// chunks received from chunks (reading bytes from src at chunk.Chunk.Offset, or from
// the extents opt.Layout gives) until chunks is closed and every chunk sent has been
// acknowledged.
//
// done is called exactly once per chunk taken from chunks, with the receiver's verdict:
// nil, or an error wrapping chunk.ErrChecksum, chunk.ErrReceiverIO, chunk.ErrRejected, ErrStreamBroken
// (the chunk was in flight on a connection that failed), the error of opt.Layout (the
// chunk was not sent) or the context's error. It is
// called from Send's goroutines, possibly concurrently; it may put the chunk back on
// chunks to re-send it, but should not block for long. Send keeps pulling from chunks
// until it is closed or ctx ends, even after every connection failed (the remaining
// chunks are then answered with done(c, err) at once), so a caller never blocks on the
// channel; a caller that re-sends must therefore bound its retries.
//
// Send returns nil when every connection ended cleanly, otherwise an error wrapping
// ErrStreamBroken (and, say, ErrUnknownToken) or the context's error. Cancelling ctx
// closes the connections at once.
func Send(ctx context.Context, addr string, tok Token, src *os.File, chunks <-chan chunk.Chunk, done func(chunk.Chunk, error), opt SendOptions) error {
	n, w := opt.Streams, opt.Window
	if n == 0 {
		n = DefaultStreams
	}
	if w == 0 {
		w = DefaultWindow
	}
	if n < 0 || w < 0 || (opt.Mode != SendFile && opt.Mode != ReadWrite) {
		return fmt.Errorf("fallback: invalid send options: streams %d, window %d, mode %v", opt.Streams, opt.Window, opt.Mode)
	}
	if src == nil && opt.Layout == nil {
		return errors.New("fallback: no source: src is nil and SendOptions.Layout is unset")
	}
	if opt.Encrypt && opt.CertSHA256 == ([32]byte{}) {
		return errors.New("fallback: encryption asked for without the receiver's certificate fingerprint (the receiver offers no TLS)")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &sender{addr: addr, tok: tok, src: src, chunks: chunks, done: done, opt: opt, window: w}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.stream(ctx, i) })
	}
	wg.Wait()
	err := errors.Join(errs...)
	if err != nil && ctx.Err() == nil {
		// Every connection is gone; answer the rest so the caller never blocks.
		if chunk.Drain(ctx, chunks, done, err) == nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("fallback: send to %s: %w", addr, context.Cause(ctx))
	}
	return err
}

// sender is the state one Send shares between its streams.
type sender struct {
	addr   string
	tok    Token
	src    *os.File
	chunks <-chan chunk.Chunk
	done   func(chunk.Chunk, error)
	opt    SendOptions
	window int
}

// stream runs one data connection until chunks is closed and all its chunks are
// acknowledged (nil), or until it fails or ctx ends.
func (s *sender) stream(ctx context.Context, id int) error {
	conn, macs, err := s.dial(ctx)
	if err != nil {
		return fmt.Errorf("%w: stream %d to %s: %w", ErrStreamBroken, id, s.addr, err)
	}
	if s.opt.Connected != nil {
		s.opt.Connected(conn.enc)
	}
	st := &streamState{
		sender:     s,
		ctx:        ctx,
		conn:       conn,
		macs:       macs,
		slots:      make(chan struct{}, s.window),
		readerDone: make(chan struct{}),
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	go st.readAcks()
	if err := st.writeChunks(); err != nil {
		return fmt.Errorf("%w: stream %d to %s: %w", ErrStreamBroken, id, s.addr, err)
	}
	return nil
}

// dial connects, runs the TLS handshake when encrypting, and exchanges the
// preamble.
func (s *sender) dial(ctx context.Context) (*dataConn, connMACs, error) {
	ctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	nonce, err := newNonce()
	if err != nil {
		return nil, connMACs{}, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, connMACs{}, err
	}
	tcp := nc.(*net.TCPConn)
	stop := context.AfterFunc(ctx, func() { tcp.Close() })
	dc := &dataConn{tcp: tcp}
	var sess *tlsSession
	if s.opt.Encrypt {
		sess = newTLSSession(tcp, clientTLSConfig(s.opt.CertSHA256), false, !s.opt.NoKTLS)
		err = sess.conn.HandshakeContext(ctx)
		dc = &dataConn{tcp: tcp, tls: sess.conn, enc: EncryptionTLS}
	}
	var reply [replyLen]byte
	if err == nil {
		_, err = dc.Write(appendPreamble(nil, s.tok, nonce))
	}
	if err == nil {
		_, err = io.ReadFull(dc, reply[:])
	}
	if !stop() {
		err = context.Cause(ctx)
	}
	if err == nil {
		err = parseReply(reply[:])
	}
	if err == nil && sess != nil {
		dc, err = sess.toKernel(tcp, false)
	}
	if err != nil {
		tcp.Close()
		return nil, connMACs{}, fmt.Errorf("handshake: %w", err)
	}
	return dc, senderMACs(s.tok, nonce), nil
}

// streamState is one connection: a writer (the stream goroutine) and an ack reader.
// Acks arrive in the order chunks were sent, because the receiver serves a connection
// sequentially.
type streamState struct {
	*sender
	ctx        context.Context
	conn       *dataConn
	macs       connMACs      // macs.in is used by readAcks, macs.out by the writer
	slots      chan struct{} // one token per unacknowledged chunk
	readerDone chan struct{}

	mu       sync.Mutex
	inflight []chunk.Chunk
	err      error // set once the stream failed; inflight chunks were answered
	closing  bool  // all acks are in; a read error now is the expected end
}

// fail marks the stream broken, closes the connection and answers the chunks in
// flight on it. Only the first call has an effect.
func (st *streamState) fail(err error) {
	st.mu.Lock()
	if st.err != nil || st.closing {
		st.mu.Unlock()
		return
	}
	if st.ctx.Err() != nil {
		err = context.Cause(st.ctx)
	}
	st.err = err
	lost := st.inflight
	st.inflight = nil
	st.mu.Unlock()
	st.conn.Close()
	for _, c := range lost {
		st.done(c, fmt.Errorf("chunk %d: %w: %w", c.Index, ErrStreamBroken, err))
	}
}

func (st *streamState) failure() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.err
}

func (st *streamState) readAcks() {
	defer close(st.readerDone)
	var b [ackLen + tagLen]byte
	for {
		if _, err := io.ReadFull(st.conn, b[:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the receiver closed with chunks outstanding
			}
			st.fail(fmt.Errorf("reading ack: %w", err))
			return
		}
		err := st.macs.in.open(b[:], ackLen, "ack")
		var index uint32
		var status chunk.Status
		if err == nil {
			index, status, err = parseAck(b[:ackLen])
		}
		st.mu.Lock()
		if err == nil && (len(st.inflight) == 0 || st.inflight[0].Index != index) {
			err = fmt.Errorf("%w: unexpected ack for chunk %d", ErrBadHeader, index)
		}
		if err != nil {
			st.mu.Unlock()
			st.fail(err)
			return
		}
		c := st.inflight[0]
		st.inflight = st.inflight[1:]
		st.mu.Unlock()
		verdict := chunk.Verdict(c, status)
		if status == chunk.StatusRejected || status == chunk.StatusIO {
			// The receiver closes the connection after these: the stream is broken
			// before the caller hears of it (and perhaps closes chunks).
			st.fail(fmt.Errorf("receiver ended the stream after chunk %d: %w", c.Index, verdict))
		}
		<-st.slots // free the slot first so a re-send from done can go out
		st.done(c, verdict)
		if status == chunk.StatusRejected || status == chunk.StatusIO {
			return
		}
	}
}

func (st *streamState) writeChunks() error {
	for {
		select {
		case st.slots <- struct{}{}:
		case <-st.readerDone:
			return st.failure()
		}
		var c chunk.Chunk
		var ok bool
		select {
		case c, ok = <-st.chunks:
		case <-st.readerDone:
			return st.failure()
		case <-st.ctx.Done():
			st.fail(context.Cause(st.ctx))
			return st.failure()
		}
		if !ok {
			return st.finish()
		}
		var exts []chunk.Extent
		if st.opt.Layout != nil {
			var err error
			if exts, err = layoutExtents(st.opt.Layout, c); err != nil {
				<-st.slots // nothing of c went out: its slot is free again
				st.done(c, err)
				continue
			}
		}
		st.mu.Lock()
		if st.err != nil {
			err := st.err
			st.mu.Unlock()
			st.done(c, fmt.Errorf("chunk %d: %w: %w", c.Index, ErrStreamBroken, err))
			return err
		}
		st.inflight = append(st.inflight, c)
		st.mu.Unlock()
		if err := st.writeChunk(c, exts); err != nil {
			st.fail(fmt.Errorf("sending chunk %d: %w", c.Index, err))
			return st.failure()
		}
	}
}

// finish waits for the outstanding acks and closes the connection cleanly.
func (st *streamState) finish() error {
	for range cap(st.slots) - 1 { // the writer already holds one slot
		select {
		case st.slots <- struct{}{}:
		case <-st.readerDone:
			return st.failure()
		}
	}
	st.mu.Lock()
	err := st.err
	st.closing = err == nil
	st.mu.Unlock()
	if err != nil {
		return err
	}
	st.conn.CloseWrite() // the receiver sees EOF between chunks
	<-st.readerDone
	return nil
}

// layoutExtents asks l where chunk c's bytes are and checks the answer.
func layoutExtents(l chunk.Layout, c chunk.Chunk) ([]chunk.Extent, error) {
	exts, err := l.Extents(c)
	if err == nil {
		err = chunk.CheckLayout(c, exts)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %d: the source's layout: %w", c.Index, err)
	}
	return exts, nil
}

// writeChunk sends c's header and bytes: from st.src, or from exts when the
// send has a Layout.
func (st *streamState) writeChunk(c chunk.Chunk, exts []chunk.Extent) error {
	var hb [headerLen + tagLen]byte
	hdr := appendHeader(hb[:0], c)
	if knobs.corrupt != nil && knobs.corrupt(c) {
		hdr[headerLen-1] ^= 1
	}
	hdr = st.macs.out.seal(hdr, headerLen)
	if st.conn.zeroCopy() {
		if err := writeMore(st.conn.tcp, hdr); err != nil {
			return err
		}
		if st.opt.Mode == SendFile {
			if st.opt.Layout != nil {
				return sendfileExtents(st.conn.tcp, exts)
			}
			return sendfileRange(st.conn.tcp, st.src, c.Offset, int64(c.Length))
		}
	} else if _, err := st.conn.Write(hdr); err != nil {
		return err
	}
	bp := rwPool.Get().(*[]byte)
	defer rwPool.Put(bp)
	buf := *bp
	if st.opt.Layout != nil {
		return writeExtents(st.conn, buf, exts)
	}
	off, n := c.Offset, int64(c.Length)
	for n > 0 {
		k, err := st.src.ReadAt(buf[:min(n, int64(len(buf)))], off)
		if k == 0 && err != nil {
			if err == io.EOF {
				err = errShortSource
			}
			return err
		}
		if _, err := st.conn.Write(buf[:k]); err != nil {
			return err
		}
		off += int64(k)
		n -= int64(k)
	}
	return nil
}

// writeExtents sends the bytes of exts to w in order, gathering them by pread
// (or copy, for Data) into buf so that small extents share a write.
func writeExtents(w io.Writer, buf []byte, exts []chunk.Extent) error {
	fill := 0
	for _, e := range exts {
		for d := e.Data; len(d) > 0; {
			k := copy(buf[fill:], d)
			fill, d = fill+k, d[k:]
			if fill == len(buf) {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				fill = 0
			}
		}
		if e.Data != nil {
			continue
		}
		off, n := e.Offset, e.Length
		for n > 0 {
			k, err := e.File.ReadAt(buf[fill:fill+int(min(n, int64(len(buf)-fill)))], off)
			if k == 0 && err != nil {
				if err == io.EOF {
					err = errShortSource
				}
				return err
			}
			fill, off, n = fill+k, off+int64(k), n-int64(k)
			if fill == len(buf) {
				if _, err := w.Write(buf); err != nil {
					return err
				}
				fill = 0
			}
		}
	}
	if fill > 0 {
		_, err := w.Write(buf[:fill])
		return err
	}
	return nil
}
