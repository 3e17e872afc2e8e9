package hostile

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// Finding 9c: serving without authentication on an address beyond this
// host is a configuration mistake: exit status 2 and one line naming the
// fix, unless --insecure says it is meant. Loopback needs nothing.
func TestServeUnauthenticatedBeyondLoopback(t *testing.T) {
	bin := RxferBinary(t)
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(nodeToken), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		listen, data string
		extra        []string
		refused      bool
	}{
		{"0.0.0.0:0", "127.0.0.1:0", nil, true},
		{":0", "127.0.0.1:0", nil, true},
		{"127.0.0.1:0", "0.0.0.0:0", nil, true},
		{"0.0.0.0:0", "0.0.0.0:0", []string{"--insecure"}, false},
		{"0.0.0.0:0", "0.0.0.0:0", []string{"--token-file", tokFile}, false},
		{"localhost:0", "127.0.0.2:0", nil, false},
		{"127.0.0.1:0", "127.0.0.1:0", nil, false},
	}
	for _, tc := range cases {
		args := append([]string{"--root", t.TempDir(), "--listen", tc.listen, "--data-listen", tc.data}, tc.extra...)
		served, exited := StartServe(t, bin, args...)
		switch {
		case tc.refused && served != nil:
			t.Errorf("serve %q started without authentication on %s", args, served.Control+" / "+served.Data)
		case tc.refused && (exited.Code != 2 || strings.Count(exited.Stderr, "\n") != 1 ||
			!strings.Contains(exited.Stderr, "--insecure") || !strings.Contains(exited.Stderr, "--token-file")):
			t.Errorf("want exit status 2 and one line naming --token-file and --insecure\n%s", exited)
		case !tc.refused && exited != nil:
			t.Errorf("serve %q did not start:\n%s", args, exited)
		}
	}
}

// Finding 9a: an enum value the API does not define is InvalidArgument,
// not silently the default: in a Copy, in a peer's Prepare and in a
// destination's Prepare answer.
func TestUnknownEnumValues(t *testing.T) {
	bin := RxferBinary(t)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("payload"), 0o644); err != nil {
		t.Fatal(err)
	}
	served, exited := StartServe(t, bin, "--root", root, "--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0")
	if exited != nil {
		t.Fatalf("serve exited:\n%s", exited)
	}
	conn := Dial(t, served.Control, "")
	copyWith := func(req *pb.CopyRequest) error {
		stream, err := pb.NewTransferClient(conn).Copy(context.Background(), req)
		for err == nil {
			_, err = stream.Recv()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	wantInvalid := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "42") {
			t.Errorf("%s: %v; want InvalidArgument naming the value 42", what, err)
		}
	}

	wantInvalid("Copy with transport 42", copyWith(&pb.CopyRequest{SourcePath: "/f", DestPath: "/g", Transport: 42}))
	prep := PrepareFor(&pb.CopyRequest{SourcePath: "/f", DestPath: "/h"}, []byte("payload"))
	prep.Transport = 42
	_, err := pb.NewPeerClient(conn).Prepare(context.Background(), prep)
	wantInvalid("Prepare with transport 42", err)

	fake := StartFakeDest(t, &pb.PrepareResponse{Transport: 42, FinalPath: "/x",
		Tcp: &pb.TcpChannel{Address: "127.0.0.1:1", Token: make([]byte, 16)}})
	wantInvalid("a destination answering transport 42", copyWith(&pb.CopyRequest{SourcePath: "/f", DestNode: fake.Addr, DestPath: "/x"}))

	if ents, err := os.ReadDir(root); err != nil || len(ents) != 1 {
		t.Errorf("the root holds %v (%v), want only f", ents, err)
	}
}
