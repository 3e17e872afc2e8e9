package fallback

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
)

// DefaultPreambleTimeout bounds how long a new data connection may take to present
// its preamble before it is closed.
const DefaultPreambleTimeout = 10 * time.Second

// ListenConfig holds optional settings for a [Listener].
type ListenConfig struct {
	// PreambleTimeout is how long a new connection may take to send its preamble;
	// 0 means DefaultPreambleTimeout.
	PreambleTimeout time.Duration
	// MaxUnauthenticated caps the connections that have not presented a
	// preamble yet; more are refused at once (0 = DefaultMaxUnauthenticated).
	MaxUnauthenticated int
	// LogInterval is how often one kind of refusal is logged at most; the
	// next line counts the ones left out (0 = DefaultLogInterval).
	LogInterval time.Duration
	// NoTLS makes a listener that offers no encrypted data connections
	// (serve --data-encryption off): CertSHA256 is zero, and a connection
	// that starts a TLS handshake is closed.
	NoTLS bool
	// NoKTLS keeps encrypted connections on crypto/tls even where the
	// kernel offers kTLS (to compare the two).
	NoKTLS bool
}

// Listener accepts token-authenticated data connections and lands their chunks in the
// [chunk.Sink] registered for the token. One Listener serves every transfer of a node; a bad
// connection is logged and closed without affecting the others.
type Listener struct {
	ln              *net.TCPListener
	log             *slog.Logger
	logs            *logLimiter // refusals, which a peer can repeat at will
	preambleTimeout time.Duration
	maxUnauth       int
	tls             *tls.Config // nil: no encrypted connections
	certSHA256      [32]byte
	noKTLS          bool

	mu       sync.Mutex
	closed   bool
	expected map[[16]byte]*registration // by token id
	conns    map[net.Conn]struct{}      // every open connection, so Close can end them
	unauth   int                        // connections still to present a preamble
	wg       sync.WaitGroup             // accept loop and connection handlers
}

// registration is one expected transfer.
type registration struct {
	tok        Token
	requireTLS bool
	nonces     map[[nonceLen]byte]bool // nonces of accepted preambles: a replay is refused
	sink       chunk.Sink
	conns      map[net.Conn]struct{}
	released   bool           // connection errors after release are expected
	wg         sync.WaitGroup // handlers serving this transfer
}

// Listen is ListenConfig{}.Listen.
func Listen(addr string, log *slog.Logger) (*Listener, error) {
	return ListenConfig{}.Listen(addr, log)
}

// Listen listens on the TCP address addr (such as ":0" or "10.0.0.2:7001") and starts
// accepting data connections in the background. A nil log discards messages.
func (lc ListenConfig) Listen(addr string, log *slog.Logger) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fallback: listen: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Listener{
		ln:              ln.(*net.TCPListener),
		log:             log,
		logs:            newLogLimiter(log, cmp.Or(lc.LogInterval, DefaultLogInterval)),
		preambleTimeout: lc.PreambleTimeout,
		maxUnauth:       cmp.Or(lc.MaxUnauthenticated, DefaultMaxUnauthenticated),
		noKTLS:          lc.NoKTLS,
		expected:        make(map[[16]byte]*registration),
		conns:           make(map[net.Conn]struct{}),
	}
	if l.preambleTimeout <= 0 {
		l.preambleTimeout = DefaultPreambleTimeout
	}
	if !lc.NoTLS {
		cert, sum, err := ephemeralCert()
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("fallback: data-channel certificate: %w", err)
		}
		l.tls, l.certSHA256 = serverTLSConfig(cert), sum
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// CertSHA256 returns the SHA-256 fingerprint of the listener's ephemeral TLS
// certificate, which a sender pins ([SendOptions].CertSHA256); zero when the
// listener offers no TLS (ListenConfig.NoTLS).
func (l *Listener) CertSHA256() [32]byte { return l.certSHA256 }

// ExpectOptions tune one expected transfer.
type ExpectOptions struct {
	// RequireTLS refuses the transfer's plaintext connections (status 4,
	// ErrEncryptionRequired at the sender).
	RequireTLS bool
}

// Expect is ExpectWith(tok, s, ExpectOptions{}).
func (l *Listener) Expect(tok Token, s chunk.Sink) (release func()) {
	return l.ExpectWith(tok, s, ExpectOptions{})
}

// ExpectWith registers s as the receiver of the connections that present tok
// (and prove its secret). After release returns, tok is refused, the
// transfer's open connections are closed and their handlers have returned, so
// no Sink method is running or will be called again. release is idempotent; it
// must not be called from a Sink method. ExpectWith panics if tok's id is
// already expected (tokens come from [NewToken], so that is a caller bug).
func (l *Listener) ExpectWith(tok Token, s chunk.Sink, opt ExpectOptions) (release func()) {
	r := &registration{tok: tok, requireTLS: opt.RequireTLS, nonces: make(map[[nonceLen]byte]bool), sink: s, conns: make(map[net.Conn]struct{})}
	id := tok.id()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return func() {}
	}
	if _, dup := l.expected[id]; dup {
		panic("fallback: Expect called twice with the same token")
	}
	l.expected[id] = r
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			r.released = true
			if l.expected[id] == r {
				delete(l.expected, id)
			}
			for c := range r.conns {
				c.Close()
			}
			l.mu.Unlock()
			r.wg.Wait()
		})
	}
}

// Close stops accepting, closes every data connection and waits for their handlers.
// Expected tokens are refused from then on.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	err := l.ln.Close()
	for c := range l.conns {
		c.Close()
	}
	clear(l.expected)
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Like net/http: back off on transient errors such as EMFILE.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.logs.Log(slog.LevelWarn, "accept", "fallback: accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			c.Close()
			return
		}
		if l.unauth >= l.maxUnauth {
			l.mu.Unlock()
			l.refuseBusy(c)
			continue
		}
		l.unauth++
		l.conns[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			l.handle(c.(*net.TCPConn))
			l.mu.Lock()
			delete(l.conns, c)
			l.mu.Unlock()
			c.Close()
		}()
	}
}

// refuseBusy turns away a connection over the cap of unauthenticated ones:
// a "busy" reply (a fresh socket's buffer takes it at once; the deadline
// only guards that) and close, without a goroutine or a wait.
func (l *Listener) refuseBusy(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(appendReply(nil, replyBusy))
	c.Close()
	l.logs.Log(slog.LevelWarn, "unauthenticated cap", "fallback: refused data connection: too many unauthenticated connections (raise serve --max-unauthenticated-conns)",
		"remote", c.RemoteAddr().String(), "limit", l.maxUnauth)
}

// handle authenticates one connection and then serves its chunks: a TLS
// handshake first if the connection starts one, then the preamble.
func (l *Listener) handle(c *net.TCPConn) {
	remote := c.RemoteAddr().String()
	c.SetDeadline(time.Now().Add(l.preambleTimeout))
	dc, sess, pre, err := l.readPreamble(c)
	l.mu.Lock()
	l.unauth--
	l.mu.Unlock()
	if err != nil {
		l.logs.Log(slog.LevelWarn, "no preamble", "fallback: data connection closed before preamble", "remote", remote, "err", err)
		return
	}
	p, version, err := parsePreamble(pre[:])
	if err != nil {
		if version != 0 {
			dc.Write(appendReply(nil, replyBadVersion))
		}
		l.logs.Log(slog.LevelWarn, "bad preamble", "fallback: refused data connection", "remote", remote, "err", err)
		return
	}
	l.mu.Lock()
	r := l.expected[p.id]
	why, status := "", replyUnknownToken
	switch {
	case r == nil:
		why = "unknown token"
	case !checkProof(r.tok, pre[:]):
		why = "wrong token proof" // the id alone, seen on another connection, is not enough
	case r.nonces[p.nonce]:
		why = "replayed preamble"
	case r.requireTLS && dc.enc == EncryptionOff:
		why, status = "plaintext connection for a transfer that requires encryption", replyNeedsTLS
	}
	if why == "" {
		r.nonces[p.nonce] = true
		r.conns[c] = struct{}{}
		r.wg.Add(1)
	}
	l.mu.Unlock()
	if why != "" {
		dc.Write(appendReply(nil, status))
		l.logs.Log(slog.LevelWarn, why, "fallback: refused data connection", "remote", remote, "reason", why)
		return
	}
	defer func() {
		l.mu.Lock()
		delete(r.conns, c)
		l.mu.Unlock()
		r.wg.Done()
	}()
	if _, err := dc.Write(appendReply(nil, replyOK)); err != nil {
		return
	}
	if sess != nil {
		// Nothing more is in flight either way: the sender waits for the
		// reply, and sends its first header only after it.
		if dc, err = sess.toKernel(c, true); err != nil {
			l.log.Warn("fallback: data connection lost handing TLS keys to the kernel", "remote", remote, "err", err)
			return
		}
	}
	c.SetDeadline(time.Time{})
	if o, ok := r.sink.(ConnObserver); ok {
		o.DataConnection(dc.enc)
	}
	if err := serve(dc, receiverMACs(r.tok, p.nonce), r.sink); err != nil {
		l.mu.Lock()
		quiet := r.released || l.closed
		l.mu.Unlock()
		level := slog.LevelWarn
		if quiet {
			level = slog.LevelDebug
		}
		l.log.Log(context.Background(), level, "fallback: data connection failed", "remote", remote, "err", err)
	}
}

// readPreamble reads a connection's preamble, after a TLS handshake if the
// connection starts with one; sess is that TLS session (nil: plaintext).
func (l *Listener) readPreamble(c *net.TCPConn) (dc *dataConn, sess *tlsSession, pre [preambleLen]byte, err error) {
	if _, err = io.ReadFull(c, pre[:1]); err != nil {
		return nil, nil, pre, err
	}
	dc = &dataConn{tcp: c}
	if pre[0] != tlsRecordHandshake {
		_, err = io.ReadFull(c, pre[1:])
		return dc, nil, pre, err
	}
	if l.tls == nil {
		return nil, nil, pre, errors.New("a TLS handshake, but this listener offers no encryption (serve --data-encryption off)")
	}
	sess = newTLSSession(&prefixConn{Conn: c, prefix: []byte{pre[0]}}, l.tls, true, !l.noKTLS)
	if err = sess.conn.Handshake(); err != nil {
		return nil, nil, pre, fmt.Errorf("TLS handshake: %w", err)
	}
	dc = &dataConn{tcp: c, tls: sess.conn, enc: EncryptionTLS}
	_, err = io.ReadFull(sess.conn, pre[:])
	return dc, sess, pre, err
}

// verifyDepth is how many landed chunks of one connection may wait for read-back
// verification while the next ones are spliced: it lets one connection use two cores.
const verifyDepth = 2

// landing is a chunk handed from the receive loop to the verifier of its connection.
type landing struct {
	c       chunk.Chunk
	off     int64          // where in the file the chunk's bytes went
	exts    []chunk.Extent // where they went instead, for a chunk.ExtentSink
	status  chunk.Status   // StatusOK: still to be verified; otherwise the verdict
	err     error          // the error for Landed when status is not StatusOK
	refused bool           // Admit refused it: no Landed is owed
}

// serve receives chunks on an authenticated connection until the sender closes it
// (nil) or something goes wrong. The receive loop splices chunks into the file; a
// verifier goroutine reads each back, checks its CRC, calls Landed and acks, in order.
// A chunk.ExtentSink gets AdmitExtents instead of Admit (and never File): its chunks
// land, and are read back, extent by extent.
func serve(c *dataConn, macs connMACs, s chunk.Sink) error {
	var pipe *splicePipe
	if c.zeroCopy() {
		var err error
		if pipe, err = newSplicePipe(); err != nil {
			return err
		}
		defer pipe.Close()
	}
	es, _ := s.(chunk.ExtentSink)
	var f *os.File
	if es == nil {
		f = s.File()
	}
	q := make(chan landing, verifyDepth)
	verr := make(chan error, 1)
	go func() { verr <- verify(c, macs.out, s, es != nil, q) }()
	err := receive(c, macs.in, s, es, f, pipe, q)
	close(q)
	if e := <-verr; err == nil {
		err = e
	}
	return err
}

// receive is serve's receive loop; every admitted chunk goes to q exactly once.
// With es set, f is nil and chunks land in the extents es.AdmitExtents gives.
func receive(c *dataConn, mac *frameMAC, s chunk.Sink, es chunk.ExtentSink, f *os.File, pipe *splicePipe, q chan<- landing) error {
	var hdr [headerLen + tagLen]byte
	for {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			if err == io.EOF {
				return nil // clean end between chunks
			}
			return err
		}
		if err := mac.open(hdr[:], headerLen, "chunk header"); err != nil {
			return err
		}
		ch, err := parseHeader(hdr[:headerLen])
		if err != nil {
			return err
		}
		var off int64
		var exts []chunk.Extent
		if es != nil {
			exts, err = es.AdmitExtents(ch)
		} else {
			off, err = s.Admit(ch)
		}
		if err != nil {
			// Not admitted, so Landed is not called; only the sender is told.
			st := chunk.RefusalStatus(err)
			if st == chunk.StatusRejected || st == chunk.StatusIO {
				q <- landing{c: ch, status: st, refused: true}
				return fmt.Errorf("chunk %d: %w: %w", ch.Index, st.Err(), err)
			}
			// Claimed by another send (verified, or landing now): its bytes
			// never reach the file, and the stream goes on after them.
			if _, err := io.CopyN(io.Discard, c, int64(ch.Length)); err != nil {
				return fmt.Errorf("chunk %d: %w: %w", ch.Index, ErrStreamBroken, err)
			}
			q <- landing{c: ch, status: st, refused: true}
			continue
		}
		switch {
		case es != nil:
			err = landExtents(c, ch, exts, pipe)
			if errors.Is(err, errBadExtents) {
				// Nothing landed: read past the bytes, so that the sender has
				// sent the whole chunk when it hears (and the stream ends),
				// instead of a write into a closed connection hiding the verdict.
				if _, derr := io.CopyN(io.Discard, c, int64(ch.Length)); derr != nil {
					err = derr
				}
			}
		case pipe != nil:
			err = spliceToFile(c.tcp, f, off, int64(ch.Length), pipe)
		default:
			err = copyToFile(c, f, off, int64(ch.Length))
		}
		switch {
		case err == nil:
			q <- landing{c: ch, off: off, exts: exts}
		case errors.Is(err, chunk.ErrReceiverIO):
			// The rest of the chunk is still in the socket: the stream cannot go on.
			err = fmt.Errorf("chunk %d: %w", ch.Index, err)
			q <- landing{c: ch, status: chunk.StatusIO, err: err}
			return err
		default:
			err = fmt.Errorf("chunk %d: %w: %w", ch.Index, ErrStreamBroken, err)
			s.Landed(ch, err)
			return err
		}
	}
}

// errBadExtents marks extents that cannot hold their chunk (chunk.CheckExtents).
var errBadExtents = errors.New("the sink's extents do not fit the chunk")

// landExtents lands chunk ch's bytes from c in exts, the extents a
// chunk.ExtentSink admitted it to. Extents that do not fit the chunk (a Sink
// bug) fail it with chunk.ErrReceiverIO and errBadExtents before a byte is
// read or written.
func landExtents(c *dataConn, ch chunk.Chunk, exts []chunk.Extent, pipe *splicePipe) error {
	if err := chunk.CheckExtents(ch, exts); err != nil {
		return fmt.Errorf("%w: %w: %w", chunk.ErrReceiverIO, errBadExtents, err)
	}
	if pipe != nil {
		return spliceToExtents(c.tcp, exts, int64(ch.Length), pipe)
	}
	return copyToExtents(c, exts, int64(ch.Length))
}

// verify is serve's verifier: it settles the chunks from q in order. After a failed ack
// write it closes the connection (ending receive) and keeps settling what is queued.
// With extents set (a chunk.ExtentSink), each chunk is read back from its extents.
func verify(c *dataConn, mac *frameMAC, s chunk.Sink, extents bool, q <-chan landing) error {
	var werr error
	ack := make([]byte, 0, ackLen+tagLen)
	for l := range q {
		if l.status == chunk.StatusOK {
			var sum uint32
			var err error
			if extents {
				sum, err = extentsCRC(l.exts)
			} else {
				sum, err = fileCRC(0, s.File(), l.off, int64(l.c.Length))
			}
			if err != nil {
				l.status, l.err = chunk.StatusIO, fmt.Errorf("chunk %d: %w: reading back: %w", l.c.Index, chunk.ErrReceiverIO, err)
			} else if sum != l.c.CRC {
				l.status, l.err = chunk.StatusChecksum, fmt.Errorf("chunk %d: %w (file has %08x, sender sent %08x)", l.c.Index, chunk.ErrChecksum, sum, l.c.CRC)
			}
		}
		if !l.refused {
			s.Landed(l.c, l.err)
		}
		if werr == nil {
			_, werr = c.Write(mac.seal(appendAck(ack[:0], l.c.Index, l.status), ackLen))
			if werr == nil && (l.status == chunk.StatusIO || l.status == chunk.StatusRejected) {
				werr = l.err // the protocol ends the stream after these acks
				if werr == nil {
					werr = fmt.Errorf("chunk %d: %w", l.c.Index, chunk.ErrRejected)
				}
			}
			if werr != nil {
				c.Close()
			}
		}
	}
	return werr
}

const readBackSize = 256 << 10

var readBackPool = sync.Pool{New: func() any { b := make([]byte, readBackSize); return &b }}

// fileCRC updates sum, a CRC32C, with n bytes of f at off, reading them back from
// the file so that what is verified is what landed.
func fileCRC(sum uint32, f *os.File, off, n int64) (uint32, error) {
	bp := readBackPool.Get().(*[]byte)
	defer readBackPool.Put(bp)
	buf := *bp
	for n > 0 {
		k, err := f.ReadAt(buf[:min(n, int64(len(buf)))], off)
		sum = crc32c.Update(sum, buf[:k])
		off += int64(k)
		n -= int64(k)
		if err != nil && n > 0 {
			return 0, err
		}
	}
	return sum, nil
}

// extentsCRC is fileCRC across a chunk's extents, in order: one CRC32C over
// their bytes as if they were one run.
func extentsCRC(exts []chunk.Extent) (uint32, error) {
	var sum uint32
	for _, e := range exts {
		var err error
		if sum, err = fileCRC(sum, e.File, e.Offset, e.Length); err != nil {
			return 0, err
		}
	}
	return sum, nil
}
