package hostile

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/transfer"
)

// Finding 5: exhaustion. 64 Prepares that never send data took every
// transfer slot for 60 s, renewably; one Prepare of 4 GiB with no data
// reserved 4 GiB of disk; 20,000 silent connections to the data port
// exhausted descriptors and logged 40,802 warning lines.

// noIdle keeps the idle timeout out of a test: only the limit under test acts.
func noIdle(c *transfer.Config) { c.IdleTimeout = time.Hour }

// wantExhausted fails unless err is ResourceExhausted naming flag.
func wantExhausted(t *testing.T, what string, err error, flag string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), flag) {
		t.Fatalf("%s = %s %q, want ResourceExhausted naming %s", what, st.Code(), st.Message(), flag)
	}
}

// rawPrepare sends a Prepare from a source that will never send data.
func rawPrepare(peer pb.PeerClient, id, dest string, size int64) error {
	_, err := peer.Prepare(context.Background(), &pb.PrepareRequest{
		TransferId: id, SourceNode: "hostile", SourceName: "x", DestPath: dest, Size: size, ChunkSize: 64 << 10,
		Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP, Tcp: &pb.TcpOffer{},
	})
	return err
}

func TestHostileTransfersPerClient(t *testing.T) {
	v := startVictim(t, victimConfig{Node: func(c *transfer.Config) { noIdle(c); c.MaxTransfersPerClient = 2 }})
	peer := v.peerClient(t)
	for _, id := range []string{"slot-1", "slot-2"} {
		if err := rawPrepare(peer, id, "/"+id, 1000); err != nil {
			t.Fatal(err)
		}
	}
	wantExhausted(t, "a third Prepare from one client", rawPrepare(peer, "slot-3", "/slot-3", 1000), "--max-transfers-per-client")
	if _, err := peer.Abort(context.Background(), &pb.AbortRequest{TransferId: "slot-1", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := rawPrepare(peer, "slot-4", "/slot-4", 1000); err != nil {
		t.Fatalf("Prepare after a transfer ended = %v, want its slot back", err)
	}
}

func TestHostileReservedPerClient(t *testing.T) {
	v := startVictim(t, victimConfig{Node: func(c *transfer.Config) { noIdle(c); c.MaxReservedPerClient = 1 << 20 }})
	peer := v.peerClient(t)
	if err := rawPrepare(peer, "big", "/big", 768<<10); err != nil {
		t.Fatal(err)
	}
	wantExhausted(t, "a Prepare beyond the client's reserved bytes", rawPrepare(peer, "more", "/more", 512<<10), "--max-reserved-per-client")
	// The refused Prepare created nothing: the root shows only the first
	// transfer's partial file and journal (named, to be resumable), and the
	// node holds only the first transfer.
	if names := v.names(t, "."); len(names) != 2 || !strings.HasPrefix(names[0], ".rxfer-partial-") || !strings.HasPrefix(names[1], ".rxfer-partial-") {
		t.Errorf("the root holds %q, want only the first transfer's partial file and journal", names)
	}
	if list := v.Node.List(); len(list) != 1 || list[0].ID != "big" {
		t.Errorf("the node holds %d transfers (%+v), want only %q", len(list), list, "big")
	}
	if err := rawPrepare(peer, "fits", "/fits", 256<<10); err != nil {
		t.Fatalf("a Prepare within the client's reserved bytes = %v", err)
	}
}

// TestHostileFirstByteDeadline: a prepared transfer that receives no data
// within the first-byte deadline is aborted, its partial file removed and
// its slot and reservation freed. The test waits for the abort's log line.
func TestHostileFirstByteDeadline(t *testing.T) {
	v := startVictim(t, victimConfig{Node: func(c *transfer.Config) {
		noIdle(c)
		c.FirstByteTimeout = 50 * time.Millisecond
		c.MaxTransfersPerClient = 1
	}})
	peer := v.peerClient(t)
	if err := rawPrepare(peer, "silent", "/silent", 4<<20); err != nil {
		t.Fatal(err)
	}
	line := v.Log.wait(t, "incoming transfer ended", "transfer=silent")
	if !strings.Contains(line, "--first-byte-timeout") {
		t.Errorf("abort reason %q does not name --first-byte-timeout", line)
	}
	if names := v.names(t, "."); len(names) != 0 {
		t.Errorf("the root holds %q after the deadline, want the partial file gone", names)
	}
	info, err := v.Node.Get("silent")
	if err != nil || info.State != transfer.StateFailed {
		t.Errorf("transfer after the deadline: %v, %v; want failed", info.State, err)
	}
	if err := rawPrepare(peer, "next", "/next", 4<<20); err != nil {
		t.Fatalf("Prepare after the deadline = %v, want the slot free", err)
	}
}

// preamble is a data-channel preamble (fallback/doc.go) with version ver.
func preamble(ver uint16) []byte {
	b := append([]byte("RXFD"), 0, 0, 0, 0)
	binary.BigEndian.PutUint16(b[4:], ver)
	return append(b, make([]byte, preambleLen-8)...) // id, nonce and proof: zero
}

// readReply reads a preamble reply's status byte; bound is far above what
// an answer takes: reaching it means no answer came.
func readReply(t *testing.T, c net.Conn) byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var r [8]byte
	if _, err := io.ReadFull(c, r[:]); err != nil {
		t.Fatalf("reading the preamble reply: %v", err)
	}
	if !bytes.Equal(r[:4], []byte("RXFR")) {
		t.Fatalf("reply %x is not a preamble reply", r)
	}
	return r[4]
}

// Preamble reply statuses (fallback/doc.go).
const (
	replyBadVersion = 2
	replyBusy       = 3
)

// TestHostileSilentDataConnections: connections that have not presented a
// preamble are capped; more are refused at once with "busy" and logged
// once per interval, and the ones within the cap are served.
func TestHostileSilentDataConnections(t *testing.T) {
	const limit, excess = 8, 50
	v := startVictim(t, victimConfig{Quiet: true, Data: fallback.ListenConfig{
		MaxUnauthenticated: limit, PreambleTimeout: time.Hour, LogInterval: time.Hour}})
	silent := make([]*net.TCPConn, limit)
	for i := range silent {
		silent[i] = v.dialData(t)
	}
	// The listener accepts in arrival order, so each of these finds the
	// cap already taken by the silent ones.
	for range excess {
		if st := readReply(t, v.dialData(t)); st != replyBusy {
			t.Fatalf("a connection over the cap got reply status %d, want %d (busy)", st, replyBusy)
		}
	}
	if n := v.Log.count("unauthenticated"); n != 1 {
		t.Errorf("%d refused connections logged %d lines, want 1 per interval", excess, n)
	}
	for _, c := range silent { // served all along: they get their answer
		c.Write(preamble(99))
		if st := readReply(t, c); st != replyBadVersion {
			t.Fatalf("a connection within the cap got reply status %d, want %d", st, replyBadVersion)
		}
	}
	c := v.dialData(t) // the cap's slots are free again
	c.Write(preamble(99))
	if st := readReply(t, c); st != replyBadVersion {
		t.Fatalf("a connection after the silent ones spoke got reply status %d, want %d", st, replyBadVersion)
	}
}

// TestHostileRejectLogs: repeated refusals of one kind log one line per
// interval, not one per connection.
func TestHostileRejectLogs(t *testing.T) {
	const n = 200
	v := startVictim(t, victimConfig{Quiet: true, Data: fallback.ListenConfig{LogInterval: time.Hour}})
	for range n {
		c := v.dialData(t)
		c.Write(append([]byte("GET / HTTP/1.0\r\n\r\n"), make([]byte, preambleLen-18)...)) // a preamble's length, wrong magic: closed without a reply
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
			t.Fatal(err)
		}
		c.Close()
	}
	for range n {
		c := v.dialData(t)
		c.Write(preamble(wireVersion)) // a token nobody expects
		if st := readReply(t, c); st != 1 {
			t.Fatalf("unknown token got reply status %d, want 1", st)
		}
		io.ReadAll(c) // the listener has logged before it closes
		c.Close()
	}
	if got := v.Log.count("refused data connection"); got > 2 {
		t.Errorf("%d refused connections of two kinds logged %d lines, want at most one per kind", 2*n, got)
	}
}
