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

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/service"
)

// controlTLSResult is the control plane's cost of mTLS: the p50 of a small
// copy through the gRPC API, each with a new client connection as `rxfer
// cp` makes, with and without mTLS, measured alternately in one run.
type controlTLSResult struct {
	Name    string  `json:"name"`
	Bytes   int64   `json:"bytes"`
	Copies  int     `json:"copies"`
	PlainMs float64 `json:"plain_p50_ms"`
	MTLSMs  float64 `json:"mtls_p50_ms"`
	DiffMs  float64 `json:"mtls_minus_plain_ms"`
}

// controlTLSBytes is the copy size: small, so the control plane dominates.
const controlTLSBytes = 4 << 10

// benchControlTLS runs rounds copies of controlTLSBytes between two
// in-process nodes on loopback for each mode (plaintext; mTLS with node and
// client certificates from a fresh CA) and returns the medians.
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
		client   service.Credentials
		src, dst string
		secs     []float64
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
	}
	copyOnce := func(creds service.Credentials, src, dst string) (float64, error) {
		start := time.Now()
		conn, err := creds.Dial(src)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		stream, err := pb.NewTransferClient(conn).Copy(ctx, &pb.CopyRequest{SourcePath: "/small.bin", DestNode: dst, DestPath: "/small.bin",
			Overwrite: true, Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP})
		if err != nil {
			return 0, err
		}
		for {
			_, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return time.Since(start).Seconds(), nil
			}
			if err != nil {
				return 0, err
			}
		}
	}
	for r := range rounds + 1 {
		for i := range modes {
			s, err := copyOnce(modes[i].client, modes[i].src, modes[i].dst)
			if err != nil {
				return controlTLSResult{}, fmt.Errorf("control-plane bench (tls=%v): %w", i == 1, err)
			}
			if r > 0 { // the first round warms up both
				modes[i].secs = append(modes[i].secs, s)
			}
		}
	}
	res := controlTLSResult{Name: "control plane: 4 KiB copy, p50", Bytes: controlTLSBytes, Copies: rounds,
		PlainMs: median(modes[0].secs) * 1e3, MTLSMs: median(modes[1].secs) * 1e3}
	res.DiffMs = res.MTLSMs - res.PlainMs
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
	fmt.Printf("%-28s plaintext %.2f ms, mTLS %.2f ms: mTLS costs %+.2f ms per copy (%d copies each, new connection per copy)\n",
		"control plane 4 KiB p50", r.PlainMs, r.MTLSMs, r.DiffMs, r.Copies)
}
