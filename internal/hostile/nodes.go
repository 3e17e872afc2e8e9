// Package hostile is test support for acting as a hostile peer of rxfer:
// fake source and destination nodes that speak the real gRPC APIs, and
// helpers to run the rxfer binary against them. Its _test.go files hold one
// end-to-end case per finding of issue 12 ("treat every peer as hostile").
package hostile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/internal/crc32c"
	"github.com/rxfer/rxfer/transfer"
)

// Bounds that only stop a broken test from hanging; nothing waits for them to pass.
const (
	cliTimeout   = 120 * time.Second
	readyTimeout = 30 * time.Second
)

// built is the rxfer binary this test process built, once for every test.
var built struct {
	once      sync.Once
	dir, path string
	err       error
	skip      bool
}

// RxferBinary returns $RXFER_BIN or an rxfer binary built from cmd/rxfer
// once per test process (CleanupBinary removes it), and skips t when there is
// no go command to build it with.
func RxferBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("RXFER_BIN"); bin != "" {
		return bin
	}
	built.once.Do(func() {
		goCmd, err := exec.LookPath("go")
		if err != nil {
			if goroot := os.Getenv("GOROOT"); goroot != "" {
				goCmd, err = filepath.Join(goroot, "bin", "go"), nil
			}
		}
		if err != nil {
			built.skip = true
			return
		}
		if built.dir, built.err = os.MkdirTemp("", "rxfer-hostile-"); built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "rxfer")
		if out, err := exec.Command(goCmd, "build", "-o", built.path, "github.com/rxfer/rxfer/cmd/rxfer").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build rxfer: %w\n%s", err, out)
		}
	})
	switch {
	case built.skip:
		t.Skip("no go command to build rxfer with")
	case built.err != nil:
		t.Fatal(built.err)
	}
	return built.path
}

// CleanupBinary removes the binary RxferBinary built; TestMain calls it.
func CleanupBinary() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}

// rxferCommand is bin with args in an environment without a token the test did not choose.
func rxferCommand(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RXFER_TOKEN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// CLIResult is the outcome of one rxfer run.
type CLIResult struct {
	Args           []string
	Code           int
	Stdout, Stderr string
}

func (r CLIResult) String() string {
	return fmt.Sprintf("rxfer %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

// RunRxfer runs bin with args to completion; it does not judge the exit status.
func RunRxfer(t testing.TB, bin string, args ...string) CLIResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := rxferCommand(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := CLIResult{Args: args, Code: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
	if ctx.Err() != nil {
		t.Fatalf("did not finish within %v\n%s", cliTimeout, r)
	}
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatalf("running rxfer: %v", err)
	}
	return r
}

// Served is an `rxfer serve` that printed its ready line; it is stopped
// (SIGTERM, then waited for) when the test ends.
type Served struct {
	Control, Data string
}

var readyLine = regexp.MustCompile(`^rxfer serving control=(\S+) data=(\S+)$`)

// StartServe runs `bin serve args...` until it either prints its ready line
// (the first result is set) or exits (the second is set, with its status and output).
func StartServe(t testing.TB, bin string, args ...string) (*Served, *CLIResult) {
	t.Helper()
	// An ephemeral metrics port, so daemons started side by side do not
	// compete for the default one, and SIGTERM cancelling at once (args may
	// say otherwise: the last flag wins).
	cmd := rxferCommand(context.Background(), bin, append([]string{"serve", "--metrics-listen", "127.0.0.1:0", "--drain-timeout", "0"}, args...)...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", cmd.Args, err)
	}
	first := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			first <- sc.Text()
		}
		close(first)
		io.Copy(io.Discard, stdout)
	}()
	var line string
	select {
	case line = <-first:
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		<-drained
		cmd.Wait()
		t.Fatalf("%v: neither ready nor exited within %v\nstderr:\n%s", cmd.Args, readyTimeout, stderr.String())
	}
	if m := readyLine.FindStringSubmatch(line); m != nil {
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			<-drained
			cmd.Wait()
		})
		return &Served{Control: m[1], Data: m[2]}, nil
	}
	<-drained
	cmd.Wait()
	return nil, &CLIResult{Args: cmd.Args[1:], Code: cmd.ProcessState.ExitCode(), Stdout: line, Stderr: stderr.String()}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Dial returns a plaintext client connection to addr presenting token (if not empty).
func Dial(t testing.TB, addr, token string) *grpc.ClientConn {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// serveGRPC serves g on a fresh loopback port until the test ends and returns the address.
func serveGRPC(t testing.TB, g *grpc.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Serve(lis)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return lis.Addr().String()
}

// Attack is what a FakeSource does when a client asks it to push: it gets
// the client's Copy request (dest_node and dest_token are the victim's Peer
// API and its credential) and a Peer client already dialed with them.
type Attack func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest)

// FakeSource is a node that serves the public Transfer API but, asked to
// Copy, runs its Attack against the destination instead of pushing a file,
// then reports success: what a compromised source node can do.
type FakeSource struct {
	pb.UnimplementedTransferServer
	// Addr is the fake's control address (HOST:PORT).
	Addr   string
	attack Attack
	t      testing.TB
}

// StartFakeSource serves a FakeSource on loopback until the test ends.
func StartFakeSource(t testing.TB, attack Attack) *FakeSource {
	t.Helper()
	s := &FakeSource{attack: attack, t: t}
	g := grpc.NewServer()
	pb.RegisterTransferServer(g, s)
	s.Addr = serveGRPC(t, g)
	return s
}

// Copy implements the Transfer API: it attacks req's destination.
func (s *FakeSource) Copy(req *pb.CopyRequest, stream grpc.ServerStreamingServer[pb.TransferInfo]) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if req.DestToken != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(req.DestToken)))
	}
	conn, err := grpc.NewClient(req.DestNode, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	s.attack(stream.Context(), pb.NewPeerClient(conn), req)
	return nil // claim success, whatever happened
}

// FakeDest is a destination node that serves the Peer API, records the
// bearer token of every call and refuses every Prepare.
type FakeDest struct {
	pb.UnimplementedPeerServer
	// Addr is the fake's control address (HOST:PORT).
	Addr string
	// Answer, if set, is returned by Prepare instead of an error.
	Answer *pb.PrepareResponse

	mu     sync.Mutex
	tokens []string
}

// StartFakeDest serves a FakeDest on loopback until the test ends.
func StartFakeDest(t testing.TB, answer *pb.PrepareResponse) *FakeDest {
	t.Helper()
	d := &FakeDest{Answer: answer}
	g := grpc.NewServer()
	pb.RegisterPeerServer(g, d)
	d.Addr = serveGRPC(t, g)
	return d
}

// Tokens returns the bearer tokens presented so far, one per call ("" for a call without one).
func (d *FakeDest) Tokens() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.tokens...)
}

func (d *FakeDest) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	tok := ""
	for _, v := range md.Get("authorization") {
		tok, _ = strings.CutPrefix(v, "Bearer ")
	}
	d.mu.Lock()
	d.tokens = append(d.tokens, tok)
	d.mu.Unlock()
}

// Prepare records the caller's token and refuses, or gives the fake's Answer.
func (d *FakeDest) Prepare(ctx context.Context, _ *pb.PrepareRequest) (*pb.PrepareResponse, error) {
	d.record(ctx)
	if d.Answer != nil {
		return d.Answer, nil
	}
	return nil, status.Error(codes.Internal, "fake destination: recorded the token, prepares nothing")
}

// Abort records the caller's token.
func (d *FakeDest) Abort(ctx context.Context, _ *pb.AbortRequest) (*pb.AbortResponse, error) {
	d.record(ctx)
	return &pb.AbortResponse{}, nil
}

// Commit records the caller's token and refuses.
func (d *FakeDest) Commit(ctx context.Context, _ *pb.CommitRequest) (*pb.CommitResponse, error) {
	d.record(ctx)
	return nil, status.Error(codes.Internal, "fake destination: commits nothing")
}

// PrepareFor returns the Prepare an honest source would send for req,
// carrying data: the requested destination and overwrite flag, one chunk,
// TCP only. Attacks change fields of it.
func PrepareFor(req *pb.CopyRequest, data []byte) *pb.PrepareRequest {
	return &pb.PrepareRequest{
		TransferId: NewTransferID(), SourceNode: "fake-source", SourcePath: req.SourcePath, SourceName: path.Base(req.SourcePath),
		DestPath: req.DestPath, Size: int64(len(data)), ChunkSize: max(int64(len(data)), transfer.MinChunkSize), Overwrite: req.Overwrite,
		Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP, Tcp: &pb.TcpOffer{},
	}
}

// NewTransferID returns a random transfer id.
func NewTransferID() string { return transfer.NewID() }

// PushBytes does what a source does with prep: Prepare on victim, data (of
// prep.Size bytes, in one chunk) over the TCP data channel, Commit. It
// returns the first error; an error from Prepare wraps its gRPC status.
func PushBytes(ctx context.Context, victim pb.PeerClient, prep *pb.PrepareRequest, data []byte) error {
	resp, err := victim.Prepare(ctx, prep)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	tok, err := fallback.ParseToken(hex.EncodeToString(resp.GetTcp().GetToken()))
	if err != nil {
		return fmt.Errorf("data-channel token: %w", err)
	}
	src, err := os.CreateTemp("", "rxfer-hostile-")
	if err != nil {
		return err
	}
	defer os.Remove(src.Name())
	defer src.Close()
	if _, err := src.Write(data); err != nil {
		return err
	}
	sum := crc32c.Checksum(data)
	chunks := make(chan chunk.Chunk, 1)
	chunks <- chunk.Chunk{Index: 0, Offset: 0, Length: uint32(len(data)), CRC: sum}
	close(chunks)
	var verdict error
	if err := fallback.Send(ctx, resp.GetTcp().GetAddress(), tok, src, chunks, func(_ chunk.Chunk, err error) { verdict = err },
		fallback.SendOptions{Streams: 1}); err != nil {
		return fmt.Errorf("data channel: %w", err)
	}
	if verdict != nil {
		return fmt.Errorf("chunk: %w", verdict)
	}
	_, err = victim.Commit(ctx, &pb.CommitRequest{TransferId: prep.TransferId, Size: int64(len(data)), Crc32C: sum})
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
