package fallback

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rxfer/rxfer/chunk"
)

// recordingProxy forwards TCP connections to target and records what each
// client sent: a passive observer of the data wire.
type recordingProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	sent   [][]byte // per connection, client to server
	wg     sync.WaitGroup
}

func newRecordingProxy(t *testing.T, target string) *recordingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{ln: ln, target: target}
	p.wg.Go(p.loop)
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *recordingProxy) loop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		i := len(p.sent)
		p.sent = append(p.sent, nil)
		p.mu.Unlock()
		p.wg.Go(func() {
			io.Copy(c, s)
			c.Close()
		})
		p.wg.Go(func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					p.mu.Lock()
					p.sent[i] = append(p.sent[i], buf[:n]...)
					p.mu.Unlock()
					s.Write(buf[:n])
				}
				if err != nil {
					s.(*net.TCPConn).CloseWrite()
					return
				}
			}
		})
	}
}

func (p *recordingProxy) captured() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([][]byte, len(p.sent))
	for i, b := range p.sent {
		out[i] = bytes.Clone(b)
	}
	return out
}

// dialRaw sends b on a new connection and returns everything the listener
// answered before it closed the connection.
func dialRaw(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard only
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	return got
}

// An observer who captured a whole plaintext data connection, token id and
// all, cannot open another connection for the transfer: a replay of the
// captured preamble, and a preamble with the seen id and a fresh nonce but no
// secret, are both refused while the transfer is still expected. (In wire
// version 1 the token itself was the preamble, so the replay was accepted.)
func TestSniffedTokenRefused(t *testing.T) {
	l := newListener(t, ListenConfig{})
	fx := newFixture(t, 4*4096, 4096)
	tok := expect(t, l, fx.sink)
	proxy := newRecordingProxy(t, l.Addr().String())
	if res := drive(t.Context(), proxy.ln.Addr().String(), tok, fx, 0, SendOptions{Streams: 1}); res.err != nil {
		t.Fatalf("legitimate transfer through the observer: %v", res.err)
	}
	fx.checkDest(t)
	wire := proxy.captured()
	if len(wire) != 1 || len(wire[0]) < preambleLen {
		t.Fatalf("captured %d connections", len(wire))
	}
	if bytes.Contains(wire[0], tok.secret()) {
		t.Fatal("the token's secret appears on the data wire")
	}
	sniffed := wire[0][:preambleLen]
	var seenID [16]byte
	copy(seenID[:], sniffed[8:24])
	forged := tok
	copy(forged[16:], bytes.Repeat([]byte{0x55}, 32)) // the id the observer saw, a secret it guessed
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"replayed preamble", sniffed},
		{"replayed connection", wire[0]},
		{"seen id, fresh nonce, guessed secret", appendPreamble(nil, forged, [nonceLen]byte{42})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := dialRaw(t, l.Addr().String(), tc.send); !bytes.Equal(got, appendReply(nil, replyUnknownToken)) {
				t.Fatalf("listener answered %x, want the unknown-token refusal %x and nothing more", got, appendReply(nil, replyUnknownToken))
			}
		})
	}
	if v := fx.sink.verdicts(0); len(v) != 1 {
		t.Fatalf("chunk 0 has %d verdicts after the attacks, want the legitimate one: %v", len(v), v)
	}
}

// A header or ack altered on the way, replayed at another place of the
// stream, or tagged with another connection's key fails authentication.
func TestFrameMAC(t *testing.T) {
	tok, _ := NewToken()
	s, r := senderMACs(tok, [nonceLen]byte{1}), receiverMACs(tok, [nonceLen]byte{1})
	other := senderMACs(tok, [nonceLen]byte{2})
	h0 := s.out.seal(appendHeader(nil, chunk.Chunk{Index: 0, Offset: 0, Length: 4096, CRC: 7}), headerLen)
	h1 := s.out.seal(appendHeader(nil, chunk.Chunk{Index: 1, Offset: 4096, Length: 4096, CRC: 8}), headerLen)
	if err := r.in.open(h0, headerLen, "header"); err != nil {
		t.Fatalf("genuine header 0: %v", err)
	}
	if err := r.in.open(h0, headerLen, "header"); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("header 0 replayed in place of header 1: %v, want ErrBadHeader", err)
	}
	r = receiverMACs(tok, [nonceLen]byte{1})
	r.in.open(h0, headerLen, "header")
	bad := bytes.Clone(h1)
	bad[23] ^= 1 // the CRC
	if err := r.in.open(bad, headerLen, "header"); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("altered header: %v, want ErrBadHeader", err)
	}
	r = receiverMACs(tok, [nonceLen]byte{1})
	if err := r.in.open(other.out.seal(appendHeader(nil, chunk.Chunk{Length: 1}), headerLen), headerLen, "header"); !errors.Is(err, ErrBadHeader) {
		t.Fatalf("header tagged for another connection: %v, want ErrBadHeader", err)
	}
	ack := r.out.seal(appendAck(nil, 0, chunk.StatusOK), ackLen)
	if err := s.in.open(ack, ackLen, "ack"); err != nil {
		t.Fatalf("genuine ack: %v", err)
	}
}
