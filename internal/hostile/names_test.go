package hostile

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// maxEcho is what an error may hold of a request: the limit's 256 bytes of
// input, quoted (control bytes print as 4 characters), plus the message.
const maxEcho = 4*256 + 512

// TestHostileNames is finding 8: names with NUL or control characters,
// over-long names and paths get InvalidArgument that names the limit and
// echoes at most 256 bytes; nothing is created.
func TestHostileNames(t *testing.T) {
	v := startVictim(t, victimConfig{})
	peer := v.peerClient(t)
	long := "/" + strings.Repeat("p/", 3<<19) + "x" // 3 MiB
	tests := []struct {
		name       string
		dest, src  string
		wantInText string
	}{
		{"NUL byte", "/a\x00b", "x", "NUL"},
		{"3 MiB path", long, "x", "4096"},
		{"256-byte name", "/" + strings.Repeat("n", 256), "x", "255"},
		{"256-byte name in a directory", "/" + strings.Repeat("d", 256) + "/x", "x", "255"},
		{"escape sequence", "/bad\x1b[31mname", "x", "control character"},
		{"newline", "/two\nlines", "x", "control character"},
		{"DEL", "/del\x7f", "x", "control character"},
		{"C1 control", "/csi\u009b", "x", "control character"},
		{"source name with a newline", "/", "evil\nname", "control character"},
		{"source name too long", "/", strings.Repeat("s", 300), "255"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := peer.Prepare(context.Background(), &pb.PrepareRequest{
				TransferId: "names-" + string(rune('a'+i)), SourceNode: "hostile", SourcePath: "/x", SourceName: tt.src,
				DestPath: tt.dest, Size: 10, ChunkSize: 64 << 10, Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP, Tcp: &pb.TcpOffer{},
			})
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tt.wantInText) {
				t.Errorf("Prepare = %s %.300q, want InvalidArgument naming %q", st.Code(), st.Message(), tt.wantInText)
			}
			if len(st.Message()) > maxEcho {
				t.Errorf("the error echoes %d bytes, want at most %d", len(st.Message()), maxEcho)
			}
		})
	}
	// The source's node name and path reach logs and ListTransfers.
	for i, src := range []struct{ node, path string }{{"evil\x1b]0;pwned\x07", "/x"}, {strings.Repeat("h", 300), "/x"}, {"hostile", "/x\r"}} {
		_, err := peer.Prepare(context.Background(), &pb.PrepareRequest{
			TransferId: fmt.Sprintf("source-%d", i), SourceNode: src.node, SourcePath: src.path, SourceName: "x",
			DestPath: "/y", Size: 10, ChunkSize: 64 << 10, Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP, Tcp: &pb.TcpOffer{},
		})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument {
			t.Errorf("Prepare from source node %.40q path %q = %s %q, want InvalidArgument", src.node, src.path, st.Code(), st.Message())
		}
	}
	if names := v.names(t, "."); len(names) != 0 {
		t.Errorf("the root holds %q after refused requests, want nothing", names)
	}

	// The Transfer API's source path goes through the same checks.
	tc := v.transferClient(t)
	for _, src := range []string{"/a\x00b", long, "/ctl\x01"} {
		stream, err := tc.Copy(context.Background(), &pb.CopyRequest{SourcePath: src, DestPath: "/y"})
		err = copyOutcome(stream, err)
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument || len(st.Message()) > maxEcho {
			t.Errorf("Copy from %.40q = %s %.300q (%d bytes), want InvalidArgument of at most %d bytes",
				src, st.Code(), st.Message(), len(st.Message()), maxEcho)
		}
	}
}
