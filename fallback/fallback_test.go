package fallback

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
)

// testSink lands chunks in a file and records every verdict.
type testSink struct {
	f     *os.File
	size  int64
	admit func(chunk.Chunk) error // optional extra check (may block)

	mu     sync.Mutex
	landed map[uint32][]error
}

func (s *testSink) File() *os.File { return s.f }

func (s *testSink) Admit(c chunk.Chunk) (int64, error) {
	if c.Offset+int64(c.Length) > s.size {
		return 0, fmt.Errorf("chunk %d beyond end of file", c.Index)
	}
	if s.admit != nil {
		return c.Offset, s.admit(c)
	}
	return c.Offset, nil
}

func (s *testSink) Landed(c chunk.Chunk, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.landed[c.Index] = append(s.landed[c.Index], err)
}

func (s *testSink) verdicts(i uint32) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.landed[i]...)
}

// fixture is a source file, its chunks and a destination sink.
type fixture struct {
	data   []byte
	src    *os.File
	chunks []chunk.Chunk
	sink   *testSink
}

func newFixture(t *testing.T, size, chunkSize int) *fixture {
	t.Helper()
	dir := t.TempDir()
	data := make([]byte, size)
	rand.Read(data)
	srcPath := filepath.Join(dir, "src")
	if err := os.WriteFile(srcPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	dst, err := os.OpenFile(filepath.Join(dir, "dst"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	if err := dst.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	fx := &fixture{data: data, src: src, sink: &testSink{f: dst, size: int64(size), landed: map[uint32][]error{}}}
	for off, i := 0, uint32(0); off < size; off, i = off+chunkSize, i+1 {
		n := min(chunkSize, size-off)
		fx.chunks = append(fx.chunks, chunk.Chunk{Index: i, Offset: int64(off), Length: uint32(n), CRC: crc32c.Checksum(data[off : off+n])})
	}
	return fx
}

func (fx *fixture) checkDest(t *testing.T) {
	t.Helper()
	got, err := os.ReadFile(fx.sink.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, fx.data) {
		t.Fatalf("destination differs from source (%d vs %d bytes)", len(got), len(fx.data))
	}
}

func newListener(t *testing.T, lc ListenConfig) *Listener {
	t.Helper()
	l, err := lc.Listen("127.0.0.1:0", slog.New(slog.NewTextHandler(tWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// tWriter sends log output to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(b)))
	return len(b), nil
}

func expect(t *testing.T, l *Listener, s chunk.Sink) Token {
	t.Helper()
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	release := l.Expect(tok, s)
	t.Cleanup(release)
	return tok
}

// result is what a driven Send reported.
type result struct {
	err      error
	verdicts map[uint32][]error // every done call, per chunk
}

// drive sends fx's chunks with Send, re-sending a chunk up to retries times after a
// failed verdict, and closes the channel once every chunk is settled.
func drive(ctx context.Context, addr string, tok Token, fx *fixture, retries int, opt SendOptions) result {
	ch := make(chan chunk.Chunk, len(fx.chunks)) // room for every re-send: done never blocks
	for _, c := range fx.chunks {
		ch <- c
	}
	var mu sync.Mutex
	res := result{verdicts: map[uint32][]error{}}
	settled := 0
	done := func(c chunk.Chunk, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.verdicts[c.Index] = append(res.verdicts[c.Index], err)
		if err != nil && len(res.verdicts[c.Index]) <= retries {
			ch <- c
			return
		}
		if settled++; settled == len(fx.chunks) {
			close(ch)
		}
	}
	err := Send(ctx, addr, tok, fx.src, ch, done, opt)
	mu.Lock()
	defer mu.Unlock()
	res.err = err
	return res
}

func TestRoundTrip(t *testing.T) {
	const chunk = 64 << 10
	for _, mode := range []SendMode{SendFile, ReadWrite} {
		for _, streams := range []int{1, 4} {
			for _, size := range []int{1, 7*chunk + 123, 3 * chunk} {
				t.Run(fmt.Sprintf("%v/streams=%d/size=%d", mode, streams, size), func(t *testing.T) {
					t.Parallel()
					l := newListener(t, ListenConfig{})
					fx := newFixture(t, size, chunk)
					tok := expect(t, l, fx.sink)
					res := drive(t.Context(), l.Addr().String(), tok, fx, 0, SendOptions{Streams: streams, Mode: mode, Window: 2})
					if res.err != nil {
						t.Fatalf("Send: %v", res.err)
					}
					for _, c := range fx.chunks {
						if v := res.verdicts[c.Index]; len(v) != 1 || v[0] != nil {
							t.Errorf("chunk %d: sender verdicts %v, want one nil", c.Index, v)
						}
						if v := fx.sink.verdicts(c.Index); len(v) != 1 || v[0] != nil {
							t.Errorf("chunk %d: receiver verdicts %v, want one nil", c.Index, v)
						}
					}
					fx.checkDest(t)
				})
			}
		}
	}
}

func TestChecksumMismatchIsReportedAndResent(t *testing.T) {
	for _, mode := range []SendMode{SendFile, ReadWrite} {
		t.Run(mode.String(), func(t *testing.T) {
			l := newListener(t, ListenConfig{})
			fx := newFixture(t, 5*4096+7, 4096)
			tok := expect(t, l, fx.sink)
			var corrupted atomic.Bool
			knobs.corrupt = func(c chunk.Chunk) bool {
				return c.Index == 2 && corrupted.CompareAndSwap(false, true)
			}
			t.Cleanup(func() { knobs.corrupt = nil })
			opt := SendOptions{Streams: 2, Mode: mode}
			res := drive(t.Context(), l.Addr().String(), tok, fx, 1, opt)
			if res.err != nil {
				t.Fatalf("Send: %v", res.err)
			}
			if v := res.verdicts[2]; len(v) != 2 || !errors.Is(v[0], chunk.ErrChecksum) || v[1] != nil {
				t.Fatalf("chunk 2 sender verdicts %v, want [chunk.ErrChecksum, nil]", v)
			}
			if v := fx.sink.verdicts(2); len(v) != 2 || !errors.Is(v[0], chunk.ErrChecksum) || v[1] != nil {
				t.Fatalf("chunk 2 receiver verdicts %v, want [chunk.ErrChecksum, nil]", v)
			}
			for _, c := range fx.chunks {
				if c.Index != 2 && len(res.verdicts[c.Index]) != 1 {
					t.Errorf("chunk %d verdicts %v", c.Index, res.verdicts[c.Index])
				}
			}
			fx.checkDest(t)
		})
	}
}

// TestBadConnections opens hostile connections while a transfer is mid-way (its first
// chunk is held in Admit) and checks each is closed and the transfer still completes.
func TestBadConnections(t *testing.T) {
	// Long enough that a loaded host never drops the test's own connections
	// before their preamble (the silent ones are closed after it).
	l := newListener(t, ListenConfig{PreambleTimeout: 2 * time.Second})
	fx := newFixture(t, 8*4096, 4096)
	entered, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fx.sink.admit = func(chunk.Chunk) error {
		once.Do(func() { close(entered); <-proceed })
		return nil
	}
	tok := expect(t, l, fx.sink)
	resc := make(chan result, 1)
	go func() { resc <- drive(t.Context(), l.Addr().String(), tok, fx, 0, SendOptions{Streams: 2}) }()
	<-entered

	other, _ := NewToken()
	nonce := func(b byte) [nonceLen]byte { return [nonceLen]byte{b} }
	for _, tc := range []struct {
		name      string
		send      []byte
		wantReply []byte // nil: closed without a reply
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil},
		{"bad magic", append([]byte("XXXX"), appendPreamble(nil, tok, nonce(1))[4:]...), nil},
		{"bad version", func() []byte { b := appendPreamble(nil, tok, nonce(2)); b[5] = 9; return b }(), appendReply(nil, replyBadVersion)},
		{"unknown token", appendPreamble(nil, other, nonce(3)), appendReply(nil, replyUnknownToken)},
		{"short then silent", appendPreamble(nil, tok, nonce(4))[:10], nil},
		{"silent", nil, nil},
		{"TLS handshake that never ends", []byte{tlsRecordHandshake, 3, 1}, nil},
		{"good preamble then bad header", append(appendPreamble(nil, tok, nonce(5)), bytes.Repeat([]byte{0xff}, headerLen+tagLen)...), appendReply(nil, replyOK)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c) // returns when the listener closes the connection
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !isReset(err) {
				t.Fatalf("read: %v", err)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("listener did not close the connection")
			}
			if !bytes.Equal(got, tc.wantReply) {
				t.Fatalf("reply %q, want %q", got, tc.wantReply)
			}
		})
	}
	close(proceed)
	res := <-resc
	if res.err != nil {
		t.Fatalf("concurrent transfer: %v", res.err)
	}
	fx.checkDest(t)
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && !oe.Timeout()
}

func TestReleaseRefusesToken(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := newFixture(t, 4096, 4096)
	tok, _ := NewToken()
	l.Expect(tok, fx.sink)()
	res := drive(t.Context(), l.Addr().String(), tok, fx, 0, SendOptions{Streams: 2})
	if !errors.Is(res.err, ErrUnknownToken) || !errors.Is(res.err, ErrStreamBroken) {
		t.Fatalf("Send after release: %v, want ErrUnknownToken", res.err)
	}
	if v := res.verdicts[0]; len(v) != 1 || !errors.Is(v[0], ErrUnknownToken) {
		t.Fatalf("chunk verdicts %v, want one wrapping ErrUnknownToken", v)
	}
}

// TestReleaseClosesConnections releases a transfer whose sender is connected and
// idle, and checks that the sender sees its streams broken.
func TestReleaseClosesConnections(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := newFixture(t, 2*4096, 4096)
	tok, _ := NewToken()
	release := l.Expect(tok, fx.sink)
	ch := make(chan chunk.Chunk, 2)
	verdicts := make(chan error, 2)
	done := func(c chunk.Chunk, err error) { verdicts <- err }
	errc := make(chan error, 1)
	go func() { errc <- Send(t.Context(), l.Addr().String(), tok, fx.src, ch, done, SendOptions{Streams: 1}) }()
	ch <- fx.chunks[0]
	if err := <-verdicts; err != nil {
		t.Fatalf("first chunk: %v", err)
	}
	release()
	n := len(fx.sink.verdicts(0))
	ch <- fx.chunks[1]
	if err := <-verdicts; !errors.Is(err, ErrStreamBroken) {
		t.Fatalf("chunk after release: %v, want ErrStreamBroken", err)
	}
	close(ch)
	if err := <-errc; !errors.Is(err, ErrStreamBroken) {
		t.Fatalf("Send: %v, want ErrStreamBroken", err)
	}
	if len(fx.sink.verdicts(0)) != n || len(fx.sink.verdicts(1)) != 0 {
		t.Fatal("sink called after release")
	}
}

func TestCancelStopsSendPromptly(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := newFixture(t, 4*4096, 4096)
	entered, unblock := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fx.sink.admit = func(chunk.Chunk) error {
		once.Do(func() { close(entered) })
		<-unblock
		return nil
	}
	tok := expect(t, l, fx.sink)
	t.Cleanup(func() { close(unblock) }) // runs before release
	ctx, cancel := context.WithCancel(t.Context())
	resc := make(chan result, 1)
	go func() { resc <- drive(ctx, l.Addr().String(), tok, fx, 0, SendOptions{Streams: 2}) }()
	<-entered
	start := time.Now()
	cancel()
	select {
	case res := <-resc:
		if !errors.Is(res.err, context.Canceled) {
			t.Fatalf("Send: %v, want context.Canceled", res.err)
		}
		for i, v := range res.verdicts {
			for _, err := range v {
				if err == nil {
					t.Errorf("chunk %d acknowledged although the receiver never let it in", i)
				}
			}
		}
		t.Logf("Send returned %v after cancel", time.Since(start))
	case <-time.After(30 * time.Second): // a hang guard: without the cancel, Send blocks for ever
		t.Fatal("Send did not return within 30s of cancel")
	}
}

func TestSendOptionsValidation(t *testing.T) {
	for _, opt := range []SendOptions{{Streams: -1}, {Window: -2}, {Mode: 7}} {
		if err := Send(t.Context(), "127.0.0.1:1", Token{}, nil, nil, nil, opt); err == nil {
			t.Errorf("Send(%+v) succeeded", opt)
		}
	}
}

func TestToken(t *testing.T) {
	a, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewToken()
	if a == b {
		t.Fatal("two tokens are equal")
	}
	got, err := ParseToken(a.String())
	if err != nil || got != a {
		t.Fatalf("ParseToken(String()) = %v, %v", got, err)
	}
	for _, s := range []string{"", "abc", a.String()[:95] + "g", a.String() + "00"} {
		if _, err := ParseToken(s); err == nil {
			t.Errorf("ParseToken(%q) succeeded", s)
		}
	}
}

func TestSendMode(t *testing.T) {
	for _, m := range []SendMode{SendFile, ReadWrite} {
		if got, err := ParseSendMode(m.String()); err != nil || got != m {
			t.Errorf("ParseSendMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseSendMode("splice"); err == nil {
		t.Error("ParseSendMode(splice) succeeded")
	}
}

func TestAdmitRejection(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := newFixture(t, 3*4096, 4096)
	fx.sink.size = 2 * 4096 // the last chunk is out of bounds for the receiver
	tok := expect(t, l, fx.sink)
	res := drive(t.Context(), l.Addr().String(), tok, fx, 0, SendOptions{Streams: 1})
	if !errors.Is(res.err, ErrStreamBroken) || !errors.Is(res.err, chunk.ErrRejected) {
		t.Fatalf("Send: %v, want ErrStreamBroken wrapping chunk.ErrRejected", res.err)
	}
	if v := res.verdicts[2]; len(v) != 1 || !errors.Is(v[0], chunk.ErrRejected) {
		t.Fatalf("chunk 2 verdicts %v, want one chunk.ErrRejected", v)
	}
	if v := fx.sink.verdicts(2); len(v) != 0 {
		t.Fatalf("Landed called for a rejected chunk: %v", v)
	}
}
