package main

// End-to-end tests: real `rxfer serve` daemons on loopback and the CLI, both
// as subprocesses (see helpers_test.go).

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

func TestCopyRemoteToRemote(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	for _, size := range []int64{0, 1, 65535, 65536, 65537, 3<<20 + 12345} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			name := fmt.Sprintf("f%d.bin", size)
			writeRandom(t, a.Path(name), size)
			dir := fmt.Sprintf("d%d", size)
			if err := os.Mkdir(b.Path(dir), 0o755); err != nil {
				t.Fatal(err)
			}
			mustCopy(t, "", a.At("/"+name), b.At("/"+dir+"/"))
			sameFile(t, a.Path(name), b.Path(filepath.Join(dir, name)))
			wantEntries(t, b.Path(dir), name)
		})
	}
}

// TestCopyLocalEnds runs copies where the CLI itself is one end (or both).
func TestCopyLocalEnds(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonConfig{ID: "node"})
	local := t.TempDir()
	const size = 1<<20 + 7
	tests := []struct {
		name     string
		src, dst func(name string) string // SRC/DST arguments for a file name
		srcPath  func(name string) string // where the source is written
		dstPath  func(name string) string // where the copy must land
	}{
		{"local to remote", localIn(local), d.At, localIn(local), d.Path},
		{"remote to local", d.At, localIn(local), d.Path, localIn(local)},
		{"local to local", localIn(local), localIn(filepath.Join(local, "out")), localIn(local), localIn(filepath.Join(local, "out"))},
	}
	if err := os.Mkdir(filepath.Join(local, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := fmt.Sprintf("src%d.bin", i), fmt.Sprintf("dst%d.bin", i)
			writeRandom(t, tt.srcPath(src), size)
			mustCopy(t, "", tt.src("/"+src), tt.dst("/"+dst))
			sameFile(t, tt.srcPath(src), tt.dstPath(dst))
		})
	}
	wantEntries(t, filepath.Join(local, "out"), "dst2.bin")
}

// localIn returns a func naming a file in dir (as a local CLI argument).
func localIn(dir string) func(string) string {
	return func(name string) string { return filepath.Join(dir, name) }
}

func TestCopyJSON(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	writeRandom(t, a.Path("j.bin"), 1<<20+3)
	r := mustCopyJSON(t, a.At("/j.bin"), b.At("/"))
	last := r[len(r)-1]
	if last.State != pb.State_STATE_COMMITTED {
		t.Fatalf("last event state %v, want STATE_COMMITTED", last.State)
	}
	if got, want := last.GetResult().GetCrc32C(), fileCRC(t, a.Path("j.bin")); got != want {
		t.Errorf("result.crc32c = %08x, want %08x", got, want)
	}
	if got := last.GetResult().GetFinalPath(); got != "/j.bin" {
		t.Errorf("result.final_path = %q, want /j.bin", got)
	}
	if last.BytesDone != 1<<20+3 || last.BytesTotal != 1<<20+3 {
		t.Errorf("bytes_done/bytes_total = %d/%d, want %d", last.BytesDone, last.BytesTotal, 1<<20+3)
	}
	sameFile(t, a.Path("j.bin"), b.Path("j.bin"))
}

// mustCopyJSON runs `rxfer cp --json` and parses every stdout line as a
// TransferInfo written with proto field names; it returns the events.
func mustCopyJSON(t *testing.T, args ...string) []*pb.TransferInfo {
	t.Helper()
	r := rxfer(t, append([]string{"cp", "--json", "--chunk-size", "65536"}, args...)...)
	if r.Code != 0 {
		t.Fatalf("copy failed:\n%s", r)
	}
	var events []*pb.TransferInfo
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			t.Fatalf("stdout line is not JSON: %q: %v", line, err)
		}
		if _, ok := fields["transfer_id"]; !ok {
			t.Errorf("line %q has no transfer_id (proto field names expected)", line)
		}
		var e pb.TransferInfo
		if err := protojson.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("stdout line is not a TransferInfo: %q: %v", line, err)
		}
		events = append(events, &e)
	}
	if len(events) == 0 {
		t.Fatalf("no events\n%s", r)
	}
	return events
}

// TestCopyErrors checks that each bad request fails with the right exit
// status and gRPC code, names the problem and writes nothing.
func TestCopyErrors(t *testing.T) {
	t.Parallel()
	// base holds both roots and a directory outside them; after every row
	// nothing new may be beside the roots or in outside.
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	for _, dir := range []string{"a", "b", "outside"} {
		if err := os.Mkdir(filepath.Join(base, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	a := startDaemon(t, daemonConfig{ID: "node-a", Root: filepath.Join(base, "a")})
	b := startDaemon(t, daemonConfig{ID: "node-b", Root: filepath.Join(base, "b")})
	writeRandom(t, a.Path("src.bin"), 100_000)
	writeFile(t, filepath.Join(outside, "secret"), []byte("outside the root"))
	for _, link := range []struct{ root, name, target string }{
		{b.Root, "abs-out", outside},                   // absolute symlink out of the root
		{b.Root, "rel-out", relTo(t, b.Root, outside)}, // relative symlink climbing out
		{a.Root, "evil.bin", filepath.Join(outside, "secret")},
	} {
		if err := os.Symlink(link.target, filepath.Join(link.root, link.name)); err != nil {
			t.Fatal(err)
		}
	}
	localSrc := filepath.Join(t.TempDir(), "local.bin")
	writeRandom(t, localSrc, 1000)
	dead := deadAddr(t)

	tests := []struct {
		name string
		args []string // after "cp --chunk-size 65536"
		code int
		want []string // substrings of stderr
	}{
		{"source missing", []string{a.At("/nope.bin"), b.At("/")}, 1, []string{"NotFound", "nope.bin"}},
		{"dot-dot escape", []string{a.At("/src.bin"), b.At("/../escape")}, 1, []string{"PermissionDenied"}},
		{"dot-dot escape dir", []string{a.At("/src.bin"), b.At("/../")}, 1, []string{"PermissionDenied"}},
		{"absolute symlink dest dir", []string{a.At("/src.bin"), b.At("/abs-out/")}, 1, []string{"PermissionDenied"}},
		{"absolute symlink dest dir file", []string{a.At("/src.bin"), b.At("/abs-out/x.bin")}, 1, []string{"PermissionDenied"}},
		{"relative symlink dest dir", []string{a.At("/src.bin"), b.At("/rel-out/")}, 1, []string{"PermissionDenied"}},
		{"source symlink out", []string{a.At("/evil.bin"), b.At("/")}, 1, []string{"PermissionDenied", "evil.bin"}},
		{"source dot-dot", []string{a.At("/../" + filepath.Base(outside) + "/secret"), b.At("/")}, 1, []string{"PermissionDenied"}},
		{"dest dir missing", []string{a.At("/src.bin"), b.At("/no/such/dir/x.bin")}, 1, []string{"NotFound"}},
		{"source is a directory", []string{a.At("/"), b.At("/x.bin")}, 1, []string{"InvalidArgument"}},
		{"dest node down", []string{a.At("/src.bin"), dead + ":/x.bin"}, 1, []string{"Unavailable", dead}},
		{"source node down", []string{dead + ":/src.bin", b.At("/")}, 1, []string{"Unavailable"}},
		{"local to node down", []string{localSrc, dead + ":/x.bin"}, 1, []string{"Unavailable", dead}},
		{"remote to local, node down", []string{dead + ":/src.bin", t.TempDir() + "/"}, 1, []string{"Unavailable"}},
		{"bad port", []string{a.At("/src.bin"), "host:99999:/x"}, 2, []string{"HOST:PORT:/path", "99999"}},
		{"bad IPv6", []string{"[::1:7470:/x", b.At("/")}, 2, []string{"HOST:PORT:/path"}},
		{"no host", []string{a.At("/src.bin"), ":7470:/x"}, 2, []string{"HOST:PORT:/path"}},
		{"one argument", []string{a.At("/src.bin")}, 2, []string{"SRC and DST"}},
		{"three arguments", []string{a.At("/src.bin"), b.At("/"), b.At("/y")}, 2, []string{"SRC and DST"}},
		{"bad transport", []string{"--transport", "carrier-pigeon", a.At("/src.bin"), b.At("/")}, 2, []string{"carrier-pigeon"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := rxfer(t, append([]string{"cp", "--chunk-size", "65536"}, tt.args...)...)
			wantFailure(t, r, tt.code, tt.want...)
			if r.Took > 25*time.Second {
				t.Errorf("took %v, want a prompt failure", r.Took)
			}
		})
	}
	t.Cleanup(func() {
		// After every row: nothing written outside the roots or into b.
		wantEntries(t, outside, "secret")
		wantEntries(t, base, "a", "b", "outside")
		wantEntries(t, b.Root, "abs-out", "rel-out")
	})
}

// relTo returns target relative to dir.
func relTo(t *testing.T, dir, target string) string {
	t.Helper()
	rel, err := filepath.Rel(dir, target)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

func TestCopyForce(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	writeRandom(t, a.Path("new.bin"), 300_000)
	old := []byte("the existing file, which must survive a copy without --force\n")
	writeFile(t, b.Path("new.bin"), old)

	r := rxfer(t, "cp", "--chunk-size", "65536", a.At("/new.bin"), b.At("/"))
	wantFailure(t, r, 1, "AlreadyExists", "new.bin", "--force")
	if got, _ := os.ReadFile(b.Path("new.bin")); !bytes.Equal(got, old) {
		t.Fatalf("existing file changed by a refused copy: %q", got)
	}
	wantEntries(t, b.Root, "new.bin")

	mustCopy(t, "", "--force", a.At("/new.bin"), b.At("/new.bin"))
	sameFile(t, a.Path("new.bin"), b.Path("new.bin"))
	wantEntries(t, b.Root, "new.bin")
}

// TestCopyDiskFull copies onto a 1 MiB tmpfs: the destination refuses up
// front (preallocation), leaves no partial file and keeps what was there.
func TestCopyDiskFull(t *testing.T) {
	t.Parallel()
	requireBinary(t)
	root := mountTmpfs(t, "1m")
	a := startDaemon(t, daemonConfig{ID: "node-a"})
	b := startDaemon(t, daemonConfig{ID: "node-b", Root: root})
	keep := bytes.Repeat([]byte("keep me "), 8192)
	writeFile(t, b.Path("existing.bin"), keep)
	writeRandom(t, a.Path("big.bin"), 4<<20)

	r := rxfer(t, "cp", "--chunk-size", "65536", a.At("/big.bin"), b.At("/"))
	wantFailure(t, r, 1, "ResourceExhausted")
	wantEntries(t, root, "existing.bin")
	if got, _ := os.ReadFile(b.Path("existing.bin")); !bytes.Equal(got, keep) {
		t.Error("existing file changed")
	}
	// The node still works once the copy fits.
	writeRandom(t, a.Path("small.bin"), 200_000)
	mustCopy(t, "", a.At("/small.bin"), b.At("/"))
	sameFile(t, a.Path("small.bin"), b.Path("small.bin"))
}

// TestMalformedDataConnections attacks the destination's data port while a
// copy runs: every bad connection is refused and closed, and neither the
// copy nor the daemon notices.
func TestMalformedDataConnections(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	writeRandom(t, a.Path("m.bin"), 8<<20)

	done := make(chan result, 1)
	go func() { done <- rxfer(t, "cp", "--chunk-size", "65536", a.At("/m.bin"), b.At("/")) }()

	// Wire version 2 (fallback/doc.go): a token id, then a nonce and a proof
	// (zero here: a guessed secret).
	preamble := func(version uint16, id []byte) []byte {
		p := append([]byte("RXFD"), binary.BigEndian.AppendUint16(nil, version)...)
		return append(append(append(p, 0, 0), id...), make([]byte, 48)...)
	}
	garbage := bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 1<<16)
	attacks := []struct {
		name  string
		send  []byte
		reply []byte // expected reply before the close (nil: none)
	}{
		{"nothing", nil, nil},
		{"short preamble", []byte("RXF"), nil},
		{"garbage", garbage, nil},
		{"wrong token", preamble(2, bytes.Repeat([]byte{7}, 16)), []byte("RXFR\x01\x00\x00\x00")},
		{"wrong token then chunks", append(preamble(2, make([]byte, 16)), garbage...), []byte("RXFR\x01\x00\x00\x00")},
		{"bad version", preamble(99, make([]byte, 16)), []byte("RXFR\x02\x00\x00\x00")},
	}
	// A connection that says nothing stays open through the copy.
	idle, err := net.Dial("tcp", b.Data)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	var wg sync.WaitGroup
	for range 4 {
		for _, at := range attacks {
			wg.Go(func() {
				c, err := net.Dial("tcp", b.Data)
				if err != nil {
					t.Errorf("%s: %v", at.name, err)
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				c.Write(at.send)
				if at.send == nil || len(at.send) < 72 {
					c.(*net.TCPConn).CloseWrite() // the receiver sees EOF in the preamble
				}
				// The receiver must answer as documented and close; a reset
				// (unread garbage) is also a close.
				got, err := io.ReadAll(c)
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Errorf("%s: data port did not close the connection: %v", at.name, err)
				}
				if at.reply != nil && !bytes.HasPrefix(got, at.reply) {
					t.Errorf("%s: reply %q, want %q", at.name, got, at.reply)
				}
			})
		}
	}
	wg.Wait()
	r := <-done
	if r.Code != 0 {
		t.Fatalf("copy failed under attack:\n%s", r)
	}
	sameFile(t, a.Path("m.bin"), b.Path("m.bin"))
	if st := healthStatus(t, b.Control); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("destination health %v after the attack", st)
	}
	mustCopy(t, "", a.At("/m.bin"), b.At("/again.bin"))
	sameFile(t, a.Path("m.bin"), b.Path("again.bin"))
	wantEntries(t, b.Root, "m.bin", "again.bin")
}

func TestConcurrentCopies(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	const n = 16
	for i := range n {
		writeRandom(t, a.Path(fmt.Sprintf("c%02d.bin", i)), int64(100_000+i*37_001))
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			name := fmt.Sprintf("/c%02d.bin", i)
			results[i] = rxfer(t, "cp", "--chunk-size", "65536", a.At(name), b.At(name))
		})
	}
	wg.Wait()
	var names []string
	for i, r := range results {
		name := fmt.Sprintf("c%02d.bin", i)
		names = append(names, name)
		if r.Code != 0 || !strings.HasPrefix(r.lastLine(), "copied ") {
			t.Errorf("copy %d failed:\n%s", i, r)
			continue
		}
		sameFile(t, a.Path(name), b.Path(name))
	}
	wantEntries(t, b.Root, names...)
}

func TestStatusCancelVersion(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	writeRandom(t, a.Path("s.bin"), 200_000)
	ev := mustCopyJSON(t, a.At("/s.bin"), b.At("/"))
	id := ev[len(ev)-1].TransferId

	for _, d := range []*daemon{a, b} {
		r := rxfer(t, "status", d.Control)
		if r.Code != 0 {
			t.Fatalf("status failed:\n%s", r)
		}
		if !regexp.MustCompile(`(?m)^` + id + `\s+(in|out)\s+committed\s`).MatchString(r.Stdout) {
			t.Errorf("status of %s does not list %s as committed:\n%s", d.Control, id, r)
		}
		if !strings.HasPrefix(r.Stdout, "node ") {
			t.Errorf("status does not start with the node line:\n%s", r)
		}
	}
	wantFailure(t, rxfer(t, "cancel", a.Control, "unknown-id"), 1, "NotFound", "unknown-id")
	wantFailure(t, rxfer(t, "status"), 2)
	wantFailure(t, rxfer(t, "status", "nohost"), 2, "HOST:PORT")
	wantFailure(t, rxfer(t, "cancel", a.Control), 2)
	wantFailure(t, rxfer(t, "status", deadAddr(t)), 1, "Unavailable")
	wantFailure(t, rxfer(t, "frobnicate"), 2, "unknown command")

	r := rxfer(t, "version")
	if r.Code != 0 || !regexp.MustCompile(`^rxfer \S+\n$`).MatchString(r.Stdout) {
		t.Errorf("version:\n%s", r)
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonConfig{})
	if st := healthStatus(t, d.Control); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, want SERVING", st)
	}
}

// TestBearerToken runs two daemons that require a token: calls without it
// are refused, with it they work (also daemon to daemon).
func TestBearerToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokFile, wrongFile := filepath.Join(dir, "token"), filepath.Join(dir, "wrong")
	for name, tok := range map[string]string{tokFile: "s3cret-e2e-token\n", wrongFile: "not-the-token\n"} {
		if err := os.WriteFile(name, []byte(tok), 0o600); err != nil { // a token file others can read is refused
			t.Fatal(err)
		}
	}
	a := startDaemon(t, daemonConfig{ID: "node-a", TokenFile: tokFile})
	b := startDaemon(t, daemonConfig{ID: "node-b", TokenFile: tokFile})
	writeRandom(t, a.Path("t.bin"), 150_000)
	local := filepath.Join(t.TempDir(), "local.bin")
	writeRandom(t, local, 70_000)

	wantFailure(t, rxfer(t, "status", a.Control), 1, "Unauthenticated")
	wantFailure(t, rxfer(t, "status", "--token-file", wrongFile, a.Control), 1, "Unauthenticated")
	wantFailure(t, rxfer(t, "cp", a.At("/t.bin"), b.At("/")), 1, "Unauthenticated")
	wantFailure(t, rxfer(t, "cp", local, b.At("/")), 1, "Unauthenticated")
	wantEntries(t, b.Root)
	if st := healthStatus(t, a.Control); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health without token = %v, want SERVING", st)
	}

	if r := rxfer(t, "status", "--token-file", tokFile, a.Control); r.Code != 0 {
		t.Errorf("status with the token failed:\n%s", r)
	}
	mustCopy(t, "", "--token-file", tokFile, a.At("/t.bin"), b.At("/"))
	sameFile(t, a.Path("t.bin"), b.Path("t.bin"))
	mustCopy(t, "", "--token-file", tokFile, local, b.At("/"))
	sameFile(t, local, b.Path("local.bin"))
	pulled := t.TempDir()
	mustCopy(t, "", "--token-file", tokFile, a.At("/t.bin"), pulled+"/")
	sameFile(t, a.Path("t.bin"), filepath.Join(pulled, "t.bin"))
}

// TestInterrupt stops copies while they move bytes; the copy fails with a
// status that says why and nothing appears at the final path (the partial
// file is kept for a resume).
func TestInterrupt(t *testing.T) {
	t.Parallel()
	local := t.TempDir()
	writeRandom(t, filepath.Join(local, "big.bin"), 256<<20)
	tests := []struct {
		name  string
		local bool                                                    // the CLI is the source (else daemon a)
		stop  func(t *testing.T, a, b *daemon, r *running, id string) // runs once bytes move
		code  int
		want  string
	}{
		{"cancel on the source node", false, func(t *testing.T, a, b *daemon, r *running, id string) {
			wantCancel(t, a, id)
		}, 1, "Canceled"},
		{"cancel on the destination node", false, func(t *testing.T, a, b *daemon, r *running, id string) {
			wantCancel(t, b, id)
		}, 1, "Unavailable"}, // the source only sees its data connections reset
		{"SIGINT to the CLI as source", true, func(t *testing.T, a, b *daemon, r *running, id string) {
			r.Signal(os.Interrupt)
		}, 1, "Canceled"},
		{"SIGTERM to the destination daemon", false, func(t *testing.T, a, b *daemon, r *running, id string) {
			b.Stop(t)
		}, 1, "Unavailable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := startPair(t)
			src := filepath.Join(local, "big.bin")
			if !tt.local {
				if err := os.Link(src, a.Path("big.bin")); err != nil {
					t.Fatal(err)
				}
				src = a.At("/big.bin")
			}
			r, moving := firstMoving(t, pb.Transport_TRANSPORT_UNSPECIFIED, "--chunk-size", "4096", src, b.At("/"))
			select {
			case e := <-moving:
				tt.stop(t, a, b, r, e.TransferId)
			case <-r.scanned:
			}
			res := r.Wait(t)
			if res.Code == 0 {
				t.Skipf("the copy finished before it could be interrupted:\n%s", res)
			}
			wantFailure(t, res, tt.code, tt.want)
			wantOnlyPartials(t, b.Root) // kept for a resume; nothing at the final path
		})
	}
}

// wantCancel runs `rxfer cancel` for a running transfer.
func wantCancel(t *testing.T, d *daemon, id string) {
	t.Helper()
	if r := rxfer(t, "cancel", d.Control, id); r.Code != 0 || !strings.HasPrefix(r.Stdout, id+": ") {
		t.Errorf("cancel:\n%s", r)
	}
}

// TestCopyLocalPaths covers local paths the CLI is given: a symlink the
// user names is their own file (like cp and scp, rxfer should follow it),
// and a local path that does not exist fails with a status code like every
// other error.
func TestCopyLocalPaths(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonConfig{})
	local := t.TempDir()
	writeRandom(t, filepath.Join(local, "real.bin"), 100_000)
	if err := os.Symlink(filepath.Join(local, "real.bin"), filepath.Join(local, "link.bin")); err != nil {
		t.Fatal(err)
	}
	t.Run("local source symlink", func(t *testing.T) {
		mustCopy(t, "", filepath.Join(local, "link.bin"), d.At("/linked.bin"))
		sameFile(t, filepath.Join(local, "real.bin"), d.Path("linked.bin"))
	})
	t.Run("local source directory missing", func(t *testing.T) {
		r := rxfer(t, "cp", filepath.Join(local, "no", "such.bin"), d.At("/"))
		wantFailure(t, r, 1, "(NotFound)", "such.bin")
	})
	t.Run("local destination directory missing", func(t *testing.T) {
		r := rxfer(t, "cp", d.At("/linked.bin"), filepath.Join(local, "no", "dir", "x.bin"))
		wantFailure(t, r, 1, "(NotFound)")
	})
	t.Run("local destination exists", func(t *testing.T) {
		writeFile(t, filepath.Join(local, "exists.bin"), []byte("keep"))
		r := rxfer(t, "cp", filepath.Join(local, "real.bin"), filepath.Join(local, "exists.bin"))
		wantFailure(t, r, 1, "AlreadyExists")
		if got, _ := os.ReadFile(filepath.Join(local, "exists.bin")); string(got) != "keep" {
			t.Errorf("existing local file changed: %q", got)
		}
	})
}
