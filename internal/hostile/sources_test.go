package hostile

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// TestHostileSources is finding 6: a FIFO inside the root used as a source
// blocked a daemon thread forever (20 abandoned requests: 8 → 27 threads).
// Anything but a regular file — a FIFO, a symlink to one, a socket — gets
// InvalidArgument before any blocking call, and the requests leave no
// descriptor or thread behind.
func TestHostileSources(t *testing.T) {
	v := startVictim(t, victimConfig{Quiet: true})
	fifo := filepath.Join(v.Dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before the fix: let the opens blocked on the FIFO return
		if fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			unix.Close(fd)
		}
	})
	if err := os.Symlink("fifo", filepath.Join(v.Dir, "fifo-link")); err != nil {
		t.Fatal(err)
	}
	sock, err := net.Listen("unix", filepath.Join(v.Dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })

	tc := v.transferClient(t)
	copyFrom := func(src string) error {
		// The bound is for the blocking open before the fix; after it the
		// answer takes milliseconds.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := tc.Copy(ctx, &pb.CopyRequest{SourcePath: src, DestPath: "/copy"})
		return copyOutcome(stream, err)
	}
	if err := copyFrom("/no-such-file"); status.Code(err) != codes.NotFound { // warms up the connection before counting
		t.Fatalf("Copy from a missing file = %v, want NotFound", err)
	}
	fds, threads := openFDs(t), threadCount(t)
	const n = 20
	for i := range n {
		src := []string{"/fifo", "/fifo-link", "/sock"}[i%3]
		err := copyFrom(src)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "regular file") {
			t.Fatalf("Copy from %s = %s %q, want InvalidArgument saying it is not a regular file", src, st.Code(), st.Message())
		}
	}
	_, err = tc.RegisterRegion(context.Background(), &pb.RegisterRegionRequest{Name: "fifo", File: "/fifo"})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument {
		t.Errorf("RegisterRegion over a FIFO = %s %q, want InvalidArgument", st.Code(), st.Message())
	}
	if after := openFDs(t); after > fds {
		t.Errorf("%d requests left %d descriptors open (%d before, %d after)", n, after-fds, fds, after)
	}
	// Go keeps idle threads, so only a thread per request would show here.
	if after := threadCount(t); after-threads >= n/2 {
		t.Errorf("%d requests left %d more threads (%d before, %d after)", n, after-threads, threads, after)
	}
	if names := v.names(t, "."); len(names) != 3 {
		t.Errorf("the root holds %q, want only the FIFO, its link and the socket", names)
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(des) - 1 // ReadDir's own descriptor of the directory
}

// threadCount is this process's number of threads.
func threadCount(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line in /proc/self/status")
	return 0
}
