package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/transfer"
)

var poolTestLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// poolNode is an in-process mTLS daemon for the pool's tests.
type poolNode struct {
	root   string
	addr   string
	peer   *pki.Client // how it dials destinations (its node certificate)
	srv    *Server
	closer func()
	// serials are the client certificate serials its handshakes saw, in order.
	mu      sync.Mutex
	serials []*big.Int
}

func (n *poolNode) seen() []*big.Int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*big.Int(nil), n.serials...)
}

// startPoolNode serves node id (certificate DIR/node-ID.*) on addr
// ("127.0.0.1:0" for any port) with a data listener, requiring client certificates.
func startPoolNode(t *testing.T, dir, id, addr string) *poolNode {
	t.Helper()
	n := &poolNode{root: t.TempDir()}
	root, err := transfer.OpenRoot(n.root)
	if err != nil {
		t.Fatal(err)
	}
	data, err := fallback.Listen("127.0.0.1:0", poolTestLog)
	if err != nil {
		t.Fatal(err)
	}
	node := transfer.NewNode(transfer.Config{ID: id, Root: root, Data: data, Logger: poolTestLog, RDMAUnavailable: "not in this test"})
	kp, err := pki.LoadKeyPair(filepath.Join(dir, "node-"+id+".crt"), filepath.Join(dir, "node-"+id+".key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCAPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	n.peer = pki.NewClient(ca, kp)
	cfg := pki.ServerConfig(kp, true)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			n.mu.Lock()
			n.serials = append(n.serials, cs.PeerCertificates[0].SerialNumber)
			n.mu.Unlock()
		}
		return nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	n.addr = lis.Addr().String()
	n.srv = New(node, Options{Addr: n.addr, Logger: poolTestLog, TLS: cfg, ClientCA: ca, PeerTLS: n.peer})
	done := make(chan struct{})
	go func() { n.srv.Serve(lis); close(done) }()
	var once sync.Once
	n.closer = func() {
		once.Do(func() {
			n.srv.Stop()
			<-done
			node.Shutdown()
			data.Close()
			root.Close()
		})
	}
	t.Cleanup(n.closer)
	return n
}

// poolCerts writes a CA, certificates for nodes a and b (and impostor x,
// which names neither), all at 127.0.0.1 except x, and client ops.
func poolCerts(t *testing.T) (dir string, ca *pki.CA) {
	t.Helper()
	dir = t.TempDir()
	if _, err := pki.Init(pki.InitOptions{Dir: dir, TrustDomain: "pool.test", Validity: pki.ValidFor(time.Hour),
		Nodes:   []pki.Node{{ID: "a", Hosts: []string{"127.0.0.1"}}, {ID: "b", Hosts: []string{"127.0.0.1"}}, {ID: "x"}},
		Clients: []string{"ops"}}); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	return dir, ca
}

// copyVia asks src, over one client connection conn, to copy a small
// file to the node at dest, and returns the copy's error.
func copyVia(t *testing.T, conn *grpc.ClientConn, dest, name string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := pb.NewTransferClient(conn).Copy(ctx, &pb.CopyRequest{SourcePath: "/small.bin", DestNode: dest, DestPath: "/" + name,
		Overwrite: true, Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP})
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// poolPair is node a (the source, holding small.bin) and node b, with a
// client connection to a as client ops.
func poolPair(t *testing.T) (dir string, ca *pki.CA, a, b *poolNode, conn *grpc.ClientConn) {
	t.Helper()
	dir, ca = poolCerts(t)
	a, b = startPoolNode(t, dir, "a", "127.0.0.1:0"), startPoolNode(t, dir, "b", "127.0.0.1:0")
	if err := os.WriteFile(filepath.Join(a.root, "small.bin"), []byte("pooled"), 0o644); err != nil {
		t.Fatal(err)
	}
	kp, err := pki.LoadKeyPair(filepath.Join(dir, "client-ops.crt"), filepath.Join(dir, "client-ops.key"))
	if err != nil {
		t.Fatal(err)
	}
	cap, err := pki.LoadCAPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err = Credentials{TLS: pki.NewClient(cap, kp)}.Dial(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return dir, ca, a, b, conn
}

// rotate issues a new certificate for node id and writes it and its key
// over DIR/node-ID.*, as a certificate manager would; it returns the serial.
func rotate(t *testing.T, dir string, ca *pki.CA, id string) *big.Int {
	t.Helper()
	c, k, err := ca.Issue(pki.Identity{Kind: pki.KindNode, Name: id, TrustDomain: "pool.test"}, []string{"127.0.0.1"}, pki.ValidFor(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := pki.KeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, "node-"+id+".key"), kp, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, "node-"+id+".crt"), pki.CertPEM(c), 0o644); err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber
}

// TestPeerPoolOneHandshake: copies from a to b share one connection (a
// verifies b in one handshake, b sees a's certificate once); after a's
// certificate is rotated the next copy makes one new handshake presenting
// the new certificate, and the copies after it share that one.
func TestPeerPoolOneHandshake(t *testing.T) {
	dir, ca, a, b, conn := poolPair(t)
	const copies = 5
	for i := range copies {
		if err := copyVia(t, conn, b.addr, fmt.Sprintf("c%d", i)); err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
	}
	if got := a.peer.Handshakes(); got != 1 {
		t.Fatalf("%d copies to one peer made %d handshakes; want 1 (a pooled connection)", copies, got)
	}
	if s := b.seen(); len(s) != 1 {
		t.Fatalf("b saw %d client handshakes, want 1", len(s))
	}

	serial := rotate(t, dir, ca, "a")
	for i := range copies {
		if err := copyVia(t, conn, b.addr, fmt.Sprintf("r%d", i)); err != nil {
			t.Fatalf("copy %d after the rotation: %v", i, err)
		}
	}
	if got := a.peer.Handshakes(); got != 2 {
		t.Fatalf("after the rotation, %d handshakes in all; want 2 (one redial with the new certificate)", got)
	}
	s := b.seen()
	if len(s) != 2 || s[1].Cmp(serial) != 0 {
		t.Fatalf("b saw client serials %x; want the rotated certificate's %x last", s, serial)
	}
	if s[0].Cmp(serial) == 0 {
		t.Fatalf("the first handshake already presented the new serial %x", serial)
	}
}

// TestPeerPoolIdentity: a pooled connection is bound to the address dialled
// and re-verifies the node on every reconnection. After b stops, a copy
// fails Unavailable; an impostor (a valid certificate for node x, which
// does not name 127.0.0.1) taking b's address is refused, naming both
// identities, and receives nothing; b back at its address takes copies again.
func TestPeerPoolIdentity(t *testing.T) {
	dir, _, _, b, conn := poolPair(t)
	if err := copyVia(t, conn, b.addr, "before"); err != nil {
		t.Fatal(err)
	}
	addr := b.addr
	b.closer()

	err := copyVia(t, conn, addr, "down")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("copy to a stopped node: %v; want Unavailable", err)
	}

	x := startPoolNode(t, dir, "x", addr)
	err = copyVia(t, conn, addr, "stolen")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "presented node x (spiffe://pool.test/node/x), but node 127.0.0.1 was meant") {
		t.Fatalf("copy to an impostor at b's address: %v; want Unavailable naming node x and 127.0.0.1", err)
	}
	if ents, _ := os.ReadDir(x.root); len(ents) != 0 {
		t.Fatalf("the impostor received %d entries", len(ents))
	}
	x.closer()

	b2 := startPoolNode(t, dir, "b", addr)
	if err := copyVia(t, conn, addr, "after"); err != nil {
		t.Fatalf("copy to b back at its address: %v", err)
	}
	if _, err := os.Stat(filepath.Join(b2.root, "after")); err != nil {
		t.Fatal(err)
	}
}

// TestPeerPoolBounds: the pool keeps at most max connections, closing the
// least recently used, and Close closes the rest and refuses new copies.
func TestPeerPoolBounds(t *testing.T) {
	p := newPeerPool(2, time.Minute)
	var peers []transfer.Peer
	for i := range 3 {
		pc, err := p.Peer(Credentials{}, fmt.Sprintf("127.0.0.1:%d", 1+i))
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, pc)
	}
	p.mu.Lock()
	n := len(p.conns)
	_, first := p.conns[poolKey{addr: "127.0.0.1:1"}]
	p.mu.Unlock()
	if n != 2 || first {
		t.Fatalf("pool holds %d connections (the first: %v); want 2, the first evicted", n, first)
	}
	for _, pc := range peers {
		pc.Close()
	}
	e := peers[0].(*peerClient)
	if e.pool == nil || e.entry != nil {
		t.Fatal("a pooled peer's Close did not return its connection")
	}
	again, err := p.Peer(Credentials{}, "127.0.0.1:3")
	if err != nil {
		t.Fatal(err)
	}
	if !again.(*peerClient).reused {
		t.Fatal("a second copy to the same address did not reuse its connection")
	}
	again.Close()
	p.Close()
	if _, err := p.Peer(Credentials{}, "127.0.0.1:3"); !errors.Is(err, transfer.ErrPeerUnavailable) {
		t.Fatalf("Peer after Close: %v; want ErrPeerUnavailable", err)
	}
}
