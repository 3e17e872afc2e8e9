package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/rxfer/rxfer/transfer"
)

// benchResult is one line of `rxfer bench`.
type benchResult struct {
	Name      string  `json:"name"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	GBps      float64 `json:"gb_per_s"`
	Transport string  `json:"transport,omitempty"`
	Ratio     float64 `json:"ratio_vs_baseline,omitempty"`
}

// cmdBench measures rxfer against a plain read/write copy over loopback TCP
// in the same run (the experiment of the zero-copy papers): both write the
// same file into the same directory and end with an fsync.
func cmdBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	sizeFlag := fs.String("size", "1G", "bytes to copy (K, M, G suffixes)")
	dir := fs.String("dir", os.TempDir(), "directory for the source and the copies")
	transport := fs.String("transport", "auto", "rxfer's transport: auto, tcp or rdma")
	asJSON := fs.Bool("json", false, "print one JSON object per measurement")
	rounds := fs.Int("rounds", 3, "alternating runs of each; the median is reported")
	streams := fs.Int("streams", 0, "rxfer's parallel TCP streams (0: default)")
	chunk := fs.Int64("chunk-size", 0, "rxfer's chunk size (0: default)")
	controlRounds := fs.Int("control-rounds", 200, "4 KiB copies through the gRPC API with and without mTLS, for the control plane's TLS cost (0: skip)")
	dataEnc := fs.String("data-encryption", "off", "rxfer's TCP data-channel encryption: off or on (TLS 1.3; kTLS where the kernel offers it)")
	verify := fs.String("verify", "crc32c", "crc32c, or mac: add the whole-file keyed BLAKE3")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	size, err := parseSize(*sizeFlag)
	if err != nil || size <= 0 || fs.NArg() > 0 || *rounds < 1 {
		return usagef("usage: rxfer bench [--size 1G] [--dir DIR] [--transport auto|tcp|rdma] [--json]")
	}
	policy, ok := map[string]transfer.Policy{"auto": transfer.PolicyAuto, "tcp": transfer.PolicyTCP, "rdma": transfer.PolicyRDMA}[*transport]
	if !ok {
		return usagef("--transport %q: want auto, tcp or rdma", *transport)
	}
	encryption, ok := map[string]transfer.DataEncryption{"off": transfer.EncryptOff, "on": transfer.EncryptOn}[*dataEnc]
	if !ok {
		return usagef("--data-encryption %q: want off or on", *dataEnc)
	}
	verifyMode, ok := map[string]transfer.VerifyMode{"crc32c": transfer.VerifyCRC, "mac": transfer.VerifyMAC}[*verify]
	if !ok {
		return usagef("--verify %q: want crc32c or mac", *verify)
	}
	work, err := os.MkdirTemp(*dir, "rxfer-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	for _, d := range []string{"src", "dst"} {
		if err := os.Mkdir(filepath.Join(work, d), 0o755); err != nil {
			return err
		}
	}
	src := filepath.Join(work, "src", "bench.bin")
	if err := writeBenchFile(src, size); err != nil {
		return err
	}
	report := func(r benchResult) {
		r.GBps = float64(r.Bytes) / r.Seconds / 1e9
		if *asJSON {
			b, _ := json.Marshal(r)
			fmt.Println(string(b))
			return
		}
		ratio := ""
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("  %.2fx the baseline", r.Ratio)
		}
		fmt.Printf("%-28s %s in %.3fs = %.2f GB/s%s\n", r.Name, size2(r.Bytes), r.Seconds, r.GBps, ratio)
	}
	srcNode, err := newLocalNode(filepath.Join(work, "src"), "", nil)
	if err != nil {
		return err
	}
	defer srcNode.close()
	dstNode, err := newLocalNode(filepath.Join(work, "dst"), "127.0.0.1", nil)
	if err != nil {
		return err
	}
	defer dstNode.close()
	var baseSecs, rxSecs []float64
	var last transfer.Info
	for range *rounds {
		secs, err := readWriteCopy(src, filepath.Join(work, "dst", "baseline.bin"))
		if err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
		baseSecs = append(baseSecs, secs)
		last, err = srcNode.node.Push(context.Background(), transfer.PushRequest{SourcePath: "bench.bin", DestPath: "rxfer.bin",
			Policy: policy, Overwrite: true, Streams: *streams, ChunkSize: *chunk, DataEncryption: encryption, Verify: verifyMode}, dstNode.node.LocalPeer(), nil)
		if err != nil {
			return err
		}
		rxSecs = append(rxSecs, last.Result.Duration.Seconds())
	}
	base := benchResult{Name: "read/write over TCP", Bytes: size, Seconds: median(baseSecs)}
	report(base)
	rx := median(rxSecs)
	name := "rxfer"
	if last.DataEncryption != "" && last.DataEncryption != "off" {
		name += " (" + last.DataEncryption + ")"
	}
	if verifyMode == transfer.VerifyMAC {
		name += " --verify mac"
	}
	report(benchResult{Name: name, Bytes: size, Seconds: rx, Transport: last.Transport.String(), Ratio: base.Seconds / rx})
	if last.FallbackReason != "" && !*asJSON {
		fmt.Printf("  (rxfer used %s: %s)\n", last.Transport, last.FallbackReason)
	}
	if *controlRounds > 0 {
		r, err := benchControlTLS(work, *controlRounds)
		if err != nil {
			return err
		}
		reportControlTLS(r, *asJSON)
	}
	return nil
}

func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}

// writeBenchFile writes size pseudo-random bytes (so no layer can compress them).
func writeBenchFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			v := r.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			f.Close()
			return err
		}
	}
	return errors.Join(f.Sync(), f.Close()) // no writeback of the source during the runs
}

// readWriteCopy copies src to dst through a loopback TCP connection with
// 1 MiB read and write calls on both ends, then fsyncs dst: what rxfer's
// zero-copy path is measured against.
func readWriteCopy(src, dst string) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return readWriteTransfer(ln, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }, src, dst, 1<<20, true)
}

// readWriteTransfer copies src to dst over one TCP connection with plain
// read() and write() calls of buf bytes on both ends (ln accepts the
// receiving end, dial makes the sending one), fsyncing dst when fsync is
// set, and returns the seconds it took.
func readWriteTransfer(ln net.Listener, dial func() (net.Conn, error), src, dst string, buf int, fsync bool) (float64, error) {
	start := time.Now()
	recvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			recvErr <- err
			return
		}
		defer c.Close()
		f, err := os.Create(dst)
		if err != nil {
			recvErr <- err
			return
		}
		// The struct wrappers hide ReadFrom/WriteTo, so these are real
		// read() and write() calls (no splice or sendfile behind our back).
		_, err = io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{c}, make([]byte, buf))
		if fsync {
			err = errors.Join(err, f.Sync())
		}
		recvErr <- errors.Join(err, f.Close())
	}()
	f, err := os.Open(src)
	if err != nil {
		ln.Close() // ends the Accept
		return 0, errors.Join(err, <-recvErr)
	}
	defer f.Close()
	c, err := dial()
	if err != nil {
		ln.Close()
		return 0, errors.Join(err, <-recvErr)
	}
	_, err = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{f}, make([]byte, buf))
	c.Close()
	if err := errors.Join(err, <-recvErr); err != nil {
		return 0, err
	}
	return time.Since(start).Seconds(), nil
}
