package hostile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/internal/crc32c"
	"github.com/rxfer/rxfer/service"
	"github.com/rxfer/rxfer/transfer"
)

// receiverNode is a real destination node for the cases of findings 2 and 3:
// an engine with a TCP data listener on loopback, and its Peer API served
// over gRPC, so a fake source can be a gRPC client (service.DialPeer).
type receiverNode struct {
	node *transfer.Node
	dir  string        // the export root
	peer transfer.Peer // the node's Peer API, as a source reaches it
	data *fallback.Listener
}

func newReceiverNode(t *testing.T) *receiverNode {
	t.Helper()
	r := &receiverNode{dir: t.TempDir()}
	log := slog.New(slog.DiscardHandler)
	root, err := transfer.OpenRoot(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.data, err = fallback.Listen("127.0.0.1:0", log); err != nil {
		t.Fatal(err)
	}
	r.node = transfer.NewNode(transfer.Config{ID: "victim", Root: root, Data: r.data, Logger: log,
		RDMA: transfer.RDMAConfig{Disabled: true}})
	srv := service.New(r.node, service.Options{PeerOnly: true, Logger: log})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	if r.peer, err = service.DialPeer(lis.Addr().String(), ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.peer.Close()
		srv.Stop()
		r.node.Shutdown()
		r.data.Close()
		root.Close()
	})
	return r
}

// incoming is one transfer a fake source prepared on a receiverNode.
type incoming struct {
	id    string
	addr  string // data address
	token []byte
	plan  transfer.ChunkPlan
}

// prepare asks the node, as a source would, to receive size bytes in chunks
// of chunkSize at dest over TCP.
func (r *receiverNode) prepare(t *testing.T, id, dest string, size, chunkSize int64, overwrite bool) (incoming, error) {
	t.Helper()
	resp, err := r.peer.Prepare(context.Background(), transfer.PrepareRequest{ID: id, SourceNode: "hostile",
		SourcePath: "/x", SourceName: "x", DestPath: dest, Size: size, ChunkSize: chunkSize, Overwrite: overwrite,
		Policy: transfer.PolicyTCP, RDMAUnavailable: "test"})
	if err != nil {
		return incoming{}, err
	}
	return incoming{id: id, addr: resp.TCP.Addr, token: resp.TCP.Token, plan: transfer.ChunkPlan{Size: size, ChunkSize: chunkSize}}, nil
}

// dial opens a raw data connection for the transfer.
func (in incoming) dial(t *testing.T) *DataConn {
	t.Helper()
	d, err := DialData(in.addr, in.token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// send sends chunk i of data (the whole transfer's bytes) with crc and
// returns the receiver's ack, or the error that ended the connection.
func (in incoming) send(d *DataConn, i int, data []byte, crc uint32) (Ack, error) {
	off, n := in.plan.Span(i)
	if err := d.SendChunk(uint32(i), off, crc, data[off:off+n]); err != nil {
		return Ack{}, err
	}
	return d.ReadAck()
}

// sendAll sends every chunk of data with its true CRC on one connection and
// fails the test unless each is verified.
func (in incoming) sendAll(t *testing.T, data []byte) {
	t.Helper()
	d := in.dial(t)
	for i := range in.plan.Count() {
		off, n := in.plan.Span(i)
		if a, err := in.send(d, i, data, crc32c.Checksum(data[off:off+n])); err != nil || a.Status != uint8(chunk.StatusOK) {
			t.Fatalf("chunk %d: ack %+v, %v; want verified", i, a, err)
		}
	}
	d.CloseWrite()
}

// commit asks the node to commit the transfer with data's CRC.
func (r *receiverNode) commit(in incoming, data []byte) (transfer.CommitResponse, error) {
	return r.peer.Commit(context.Background(), transfer.CommitRequest{ID: in.id, Size: int64(len(data)), CRC32C: crc32c.Checksum(data)})
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 12))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Finding 2: a chunk that was verified is final. A second sender of the same
// chunk on another connection with the same token — other bytes with their
// own CRC, or other bytes with a wrong CRC — is refused before a byte of it
// reaches the file, and Commit publishes exactly the verified bytes.
func TestVerifiedChunkIsFinal(t *testing.T) {
	r := newReceiverNode(t)
	const chunkSize = 64 << 10
	for k, tc := range []struct {
		name    string
		evilCRC func(evil []byte) uint32
	}{
		{"other bytes with their CRC", crc32c.Checksum},
		{"other bytes with a bad CRC", func([]byte) uint32 { return 0xdeadbeef }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randomBytes(uint64(k), 2*chunkSize)
			dest := fmt.Sprintf("/final-%d", k)
			in, err := r.prepare(t, fmt.Sprintf("final-%d", k), dest, int64(len(data)), chunkSize, false)
			if err != nil {
				t.Fatal(err)
			}
			good := in.dial(t)
			if a, err := in.send(good, 0, data, crc32c.Checksum(data[:chunkSize])); err != nil || a.Status != uint8(chunk.StatusOK) {
				t.Fatalf("chunk 0: ack %+v, %v; want verified", a, err)
			}
			good.CloseWrite()
			evil := randomBytes(uint64(100+k), len(data))
			second := in.dial(t)
			a, err := in.send(second, 0, evil, tc.evilCRC(evil[:chunkSize]))
			if err != nil || a.Status != uint8(chunk.StatusVerified) {
				t.Errorf("a second send of verified chunk 0: ack %+v, %v; want status %d (already verified)", a, err, chunk.StatusVerified)
			}
			// The refusal does not end the stream: the next chunk lands.
			if a, err := in.send(second, 1, data, crc32c.Checksum(data[chunkSize:])); err != nil || a.Status != uint8(chunk.StatusOK) {
				t.Fatalf("chunk 1: ack %+v, %v; want verified", a, err)
			}
			second.CloseWrite()
			resp, err := r.commit(in, data)
			if err != nil {
				t.Fatalf("commit: %v", err)
			}
			got, err := os.ReadFile(filepath.Join(r.dir, dest))
			if err != nil {
				t.Fatal(err)
			}
			if crc32c.Checksum(got) != resp.CRC32C || !bytes.Equal(got, data) {
				t.Fatalf("committed with CRC %08x, but the file holds other bytes (CRC %08x)", resp.CRC32C, crc32c.Checksum(got))
			}
		})
	}
}

// Finding 2: a header that names a chunk's index but another chunk's range
// (or another length) is refused: an unverified send never touches a range
// that is not its own.
func TestChunkOutsideItsRangeRefused(t *testing.T) {
	r := newReceiverNode(t)
	const chunkSize = 64 << 10
	data := randomBytes(7, 2*chunkSize)
	in, err := r.prepare(t, "range", "/range", int64(len(data)), chunkSize, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []struct {
		index  uint32
		offset int64
		length uint32
	}{
		{0, chunkSize, chunkSize}, // chunk 0 aimed at chunk 1's range
		{0, 0, 2 * chunkSize},     // chunk 0 spilling into chunk 1
		{5, 0, chunkSize},         // no such chunk
		{1, chunkSize + 1, 100},   // inside chunk 1, not its range
	} {
		d := in.dial(t)
		d.SendHeader(h.index, h.offset, h.length, 0)
		if a, err := d.ReadAck(); err == nil && a.Status == uint8(chunk.StatusOK) {
			t.Errorf("header %+v was acknowledged as verified", h)
		}
	}
	in.sendAll(t, data)
	if _, err := r.commit(in, data); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(r.dir, "range")); !bytes.Equal(got, data) {
		t.Fatal("the committed file differs from the verified chunks")
	}
}

// Finding 2: two connections race to land chunk 0 of a one-chunk transfer
// with different bytes. Whatever interleaving the receiver sees, at most one
// of them is verified, and the committed file hashes to the committed CRC.
func TestRacingSendersOnOneChunk(t *testing.T) {
	r := newReceiverNode(t)
	const size = 1 << 20 // big enough for the two splices to overlap
	iterations := 40
	if testing.Short() {
		iterations = 10
	}
	a, b := randomBytes(1, size), randomBytes(2, size)
	crcs := map[uint32][]byte{crc32c.Checksum(a): a, crc32c.Checksum(b): b}
	var bothVerified, committed, overlapped int
	for it := range iterations {
		id := fmt.Sprintf("race-%d", it)
		in, err := r.prepare(t, id, "/"+id, size, size, false)
		if err != nil {
			t.Fatal(err)
		}
		conns := []*DataConn{in.dial(t), in.dial(t)}
		acks := make([]Ack, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, data := range [][]byte{a, b} {
			wg.Go(func() { acks[i], errs[i] = in.send(conns[i], 0, data, crc32c.Checksum(data)) })
		}
		wg.Wait()
		var winners [][]byte
		for i, data := range [][]byte{a, b} {
			conns[i].Close()
			if errs[i] == nil && acks[i].Status == uint8(chunk.StatusOK) {
				winners = append(winners, data)
			}
			if errs[i] == nil && acks[i].Status == uint8(chunk.StatusInFlight) {
				overlapped++
			}
		}
		if len(winners) > 1 {
			bothVerified++
		}
		// The source commits with the CRC of a chunk it was told was verified.
		for _, w := range winners {
			resp, err := r.commit(in, w)
			if err != nil {
				continue
			}
			committed++
			got, err := os.ReadFile(filepath.Join(r.dir, id))
			if err != nil {
				t.Fatal(err)
			}
			if crc32c.Checksum(got) != resp.CRC32C || !bytes.Equal(got, crcs[resp.CRC32C]) {
				t.Fatalf("iteration %d: committed with CRC %08x, but the file's CRC is %08x", it, resp.CRC32C, crc32c.Checksum(got))
			}
			break
		}
	}
	t.Logf("%d of %d iterations had the two sends in flight at once", overlapped, iterations)
	if bothVerified > 0 {
		t.Errorf("both racing sends of one chunk were verified in %d of %d iterations", bothVerified, iterations)
	}
	if committed != iterations {
		t.Errorf("%d of %d transfers committed, want all (one of the racers always wins)", committed, iterations)
	}
}

// isCode reports whether err, as a source sees a Peer call fail, is the
// engine's sentinel want (service maps status codes back to them).
func isCode(err, want error) bool { return err != nil && errors.Is(err, want) }
