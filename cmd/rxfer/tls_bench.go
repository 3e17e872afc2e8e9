package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/service"
)

// controlTLSResult is the control plane's cost of mTLS: the p50 of a small
// copy through the gRPC API with and without mTLS, measured alternately in
// one run, both as a program using the API makes it (one client
// connection for all copies; the daemon keeps its connection to the
// destination) and as `rxfer cp` makes it (a new client connection, so a
// new handshake, per copy).
type controlTLSResult struct {
	Name    string  `json:"name"`
	Bytes   int64   `json:"bytes"`
	Copies  int     `json:"copies"`
	PlainMs float64 `json:"plain_p50_ms"`
	MTLSMs  float64 `json:"mtls_p50_ms"`
	DiffMs  float64 `json:"mtls_minus_plain_ms"`
	// The same with a new client connection per copy.
	NewConnPlainMs float64 `json:"newconn_plain_p50_ms"`
	NewConnMTLSMs  float64 `json:"newconn_mtls_p50_ms"`
	NewConnDiffMs  float64 `json:"newconn_mtls_minus_plain_ms"`
}

// controlTLSBytes is the copy size: small, so the control plane dominates.
const controlTLSBytes = 4 << 10

// benchControlTLS runs rounds copies of controlTLSBytes between two
// in-process nodes on loopback for each mode (plaintext; mTLS with node and
// client certificates from a fresh CA), over one client connection and over
// a new one each, and returns the medians.
func benchControlTLS(work string, rounds int) (controlTLSResult, error) {
	dir := filepath.Join(work, "certs")
	if _, err := pki.Init(pki.InitOptions{Dir: dir, TrustDomain: "bench", Validity: pki.ValidFor(time.Hour),
		Nodes: []pki.Node{{ID: "a", Hosts: []string{"127.0.0.1"}}, {ID: "b", Hosts: []string{"127.0.0.1"}}}, Clients: []string{"bench"}}); err != nil {
		return controlTLSResult{}, err
	}
	cert := func(base string) (string, string) {
		return filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	}
	var modes [2]struct {
		client        service.Credentials
		conn          *grpc.ClientConn // kept for all copies, as a program using the API does
		src, dst      string
		secs, newSecs []float64
	}
	for i, useTLS := range []bool{false, true} {
		var addrs [2]string
		for j, name := range []string{"a", "b"} {
			root := filepath.Join(work, fmt.Sprintf("ctl-%d-%s", i, name))
			if err := os.MkdirAll(root, 0o755); err != nil {
				return controlTLSResult{}, err
			}
			if j == 0 {
				if err := os.WriteFile(filepath.Join(root, "small.bin"), make([]byte, controlTLSBytes), 0o644); err != nil {
					return controlTLSResult{}, err
				}
			}
			n, err := newLocalNode(root, "127.0.0.1", nil)
			if err != nil {
				return controlTLSResult{}, err
			}
			defer n.close()
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return controlTLSResult{}, err
			}
			opts := service.Options{Addr: lis.Addr().String(), Logger: quietLog}
			if useTLS {
				c, k := cert("node-" + name)
				t, err := serveTLSFlags{cert: &c, key: &k, clientCA: ptr(filepath.Join(dir, "ca.crt")), peerCA: ptr(""), authz: ptr("")}.load(ptr(name), quietLog)
				if err != nil {
					return controlTLSResult{}, err
				}
				t.options(&opts)
			}
			srv := service.New(n.node, opts)
			go srv.Serve(lis)
			defer srv.Stop()
			addrs[j] = lis.Addr().String()
		}
		modes[i].src, modes[i].dst = addrs[0], addrs[1]
		if useTLS {
			c, k := cert("client-bench")
			cl, err := loadTLSClient(filepath.Join(dir, "ca.crt"), c, k)
			if err != nil {
				return controlTLSResult{}, err
			}
			modes[i].client.TLS = cl
		}
		conn, err := modes[i].client.Dial(modes[i].src)
		if err != nil {
			return controlTLSResult{}, err
		}
		defer conn.Close()
		modes[i].conn = conn
	}
	copyOnce := func(conn *grpc.ClientConn, dst string) error {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		stream, err := pb.NewTransferClient(conn).Copy(ctx, &pb.CopyRequest{SourcePath: "/small.bin", DestNode: dst, DestPath: "/small.bin",
			Overwrite: true, Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP})
		if err != nil {
			return err
		}
		for {
			_, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	newConnCopy := func(creds service.Credentials, src, dst string) error {
		conn, err := creds.Dial(src)
		if err != nil {
			return err
		}
		defer conn.Close()
		return copyOnce(conn, dst)
	}
	for r := range rounds + 1 {
		for i := range modes {
			m := &modes[i]
			start := time.Now()
			err := copyOnce(m.conn, m.dst)
			kept := time.Since(start).Seconds()
			if err == nil {
				start = time.Now()
				err = newConnCopy(m.client, m.src, m.dst)
			}
			if err != nil {
				return controlTLSResult{}, fmt.Errorf("control-plane bench (tls=%v): %w", i == 1, err)
			}
			if r > 0 { // the first round warms up both
				m.secs = append(m.secs, kept)
				m.newSecs = append(m.newSecs, time.Since(start).Seconds())
			}
		}
	}
	res := controlTLSResult{Name: "control plane: 4 KiB copy, p50", Bytes: controlTLSBytes, Copies: rounds,
		PlainMs: median(modes[0].secs) * 1e3, MTLSMs: median(modes[1].secs) * 1e3,
		NewConnPlainMs: median(modes[0].newSecs) * 1e3, NewConnMTLSMs: median(modes[1].newSecs) * 1e3}
	res.DiffMs = res.MTLSMs - res.PlainMs
	res.NewConnDiffMs = res.NewConnMTLSMs - res.NewConnPlainMs
	return res, nil
}

func ptr(s string) *string { return &s }

// reportControlTLS prints the control-plane row of `rxfer bench`.
func reportControlTLS(r controlTLSResult, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return
	}
	fmt.Printf("%-28s plaintext %.2f ms, mTLS %.2f ms: mTLS costs %+.2f ms per copy (%d copies each, one client connection)\n",
		"control plane 4 KiB p50", r.PlainMs, r.MTLSMs, r.DiffMs, r.Copies)
	fmt.Printf("%-28s plaintext %.2f ms, mTLS %.2f ms: mTLS costs %+.2f ms per copy (a new client connection per copy, as rxfer cp)\n",
		"", r.NewConnPlainMs, r.NewConnMTLSMs, r.NewConnDiffMs)
}
