package hostile

// This file holds what the limits, names, sources and windows cases need:
// an rxfer daemon run in-process (engine, gRPC server, TCP data listener)
// whose knobs a test turns, a recorder of its log lines to wait on, and
// clients that act as a hostile source or data-channel sender.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/service"
	"github.com/rxfer/rxfer/transfer"
)

// victimWait bounds every wait for an event of the victim: far above what
// the event takes on a loaded host, so reaching it means the event never came.
const victimWait = 60 * time.Second

// victimConfig sets what a test changes of a victim daemon.
type victimConfig struct {
	Node  func(*transfer.Config) // adjusts the engine's config
	Data  fallback.ListenConfig  // the data listener's settings
	Quiet bool                   // keep the daemon's log lines out of the test log
}

// victim is an rxfer daemon under attack, served in-process on loopback.
type victim struct {
	Node *transfer.Node
	Dir  string // the export root on disk
	Addr string // the gRPC control address
	Data *fallback.Listener
	Log  *logRecorder
}

// startVictim serves a daemon with its own export root until the test ends.
func startVictim(t testing.TB, vc victimConfig) *victim {
	t.Helper()
	v := &victim{Dir: t.TempDir(), Log: &logRecorder{t: t, quiet: vc.Quiet, changed: make(chan struct{})}}
	log := slog.New(v.Log)
	root, err := transfer.OpenRoot(v.Dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	if v.Data, err = vc.Data.Listen("127.0.0.1:0", log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Data.Close() })
	cfg := transfer.Config{ID: "victim", Root: root, Data: v.Data, Logger: log, RDMA: transfer.RDMAConfig{Disabled: true}}
	if vc.Node != nil {
		vc.Node(&cfg)
	}
	v.Node = transfer.NewNode(cfg)
	t.Cleanup(v.Node.Shutdown)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	v.Addr = lis.Addr().String()
	srv := service.New(v.Node, service.Options{Addr: v.Addr, Logger: log})
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	return v
}

// peer is a hostile source: the victim's Peer API, as a transfer.Peer.
func (v *victim) peer(t testing.TB) transfer.Peer {
	t.Helper()
	p, err := service.DialPeer(v.Addr, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// conn is a gRPC connection to the victim's control API.
func (v *victim) conn(t testing.TB) *grpc.ClientConn {
	t.Helper()
	c, err := service.Dial(v.Addr, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// transferClient is a client of the victim's public Transfer API.
func (v *victim) transferClient(t testing.TB) pb.TransferClient {
	return pb.NewTransferClient(v.conn(t))
}

// copyOutcome reads a Copy's progress to the end and returns how it ended
// (nil: committed).
func copyOutcome(stream pb.Transfer_CopyClient, err error) error {
	for err == nil {
		_, err = stream.Recv()
	}
	if err == io.EOF {
		return nil
	}
	return err
}

// peerClient is a raw client of the victim's Peer API, for requests no
// honest source sends.
func (v *victim) peerClient(t testing.TB) pb.PeerClient {
	return pb.NewPeerClient(v.conn(t))
}

// dialData opens a raw TCP connection to the victim's data port.
func (v *victim) dialData(t testing.TB) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", v.Data.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// silentPrepare is a Prepare of a file of size bytes to dest over TCP, as a
// source sends it (whether or not it then sends data).
func silentPrepare(id, dest string, size int64) transfer.PrepareRequest {
	return transfer.PrepareRequest{ID: id, SourceNode: "hostile", SourcePath: "/x", SourceName: "x",
		DestPath: dest, Size: size, ChunkSize: 64 << 10, Policy: transfer.PolicyTCP}
}

// names lists the names in the export root's directory dir (partial files included).
func (v *victim) names(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(v.Dir, dir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// logRecorder is a slog.Handler that keeps the daemon's log lines, so a test
// can wait for the line that says something happened and count lines.
type logRecorder struct {
	t     testing.TB
	quiet bool

	mu      sync.Mutex
	lines   []string      // "LEVEL message key=value ..."
	changed chan struct{} // closed and replaced when a line arrives
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *logRecorder) WithGroup(string) slog.Handler            { return h }

// WithAttrs returns a handler that writes attrs on each line (the engine's
// per-transfer loggers carry the transfer's id, peer, direction and
// transport this way) into the same recorder.
func (h *logRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return withAttrs{h, attrs}
}

type withAttrs struct {
	*logRecorder
	attrs []slog.Attr
}

func (w withAttrs) WithAttrs(attrs []slog.Attr) slog.Handler {
	return withAttrs{w.logRecorder, append(slices.Clip(w.attrs), attrs...)}
}

func (w withAttrs) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(w.attrs...)
	return w.logRecorder.Handle(ctx, r)
}

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	line := b.String()
	if !h.quiet {
		h.t.Log(line)
	}
	h.mu.Lock()
	h.lines = append(h.lines, line)
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	return nil
}

// count returns how many lines so far contain every one of parts.
func (h *logRecorder) count(parts ...string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.lines {
		if containsAll(l, parts) {
			n++
		}
	}
	return n
}

// wait blocks until a line containing every one of parts was logged and
// returns it; it fails the test after victimWait.
func (h *logRecorder) wait(t testing.TB, parts ...string) string {
	t.Helper()
	deadline := time.NewTimer(victimWait)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		for _, l := range h.lines {
			if containsAll(l, parts) {
				h.mu.Unlock()
				return l
			}
		}
		changed := h.changed
		h.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log line with %q within %v", parts, victimWait)
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
