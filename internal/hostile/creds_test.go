package hostile

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

const nodeToken = "the-node-s-own-secret-token"

// tokenNode starts `rxfer serve` on loopback with nodeToken and a small
// file /f, plus extra flags, and returns a Transfer client holding the token.
func tokenNode(t *testing.T, bin string, extra ...string) pb.TransferClient {
	t.Helper()
	dir, root := t.TempDir(), t.TempDir()
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(nodeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("payload"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--root", root, "--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0", "--token-file", tokFile}, extra...)
	served, exited := StartServe(t, bin, args...)
	if exited != nil {
		t.Fatalf("serve exited:\n%s", exited)
	}
	return pb.NewTransferClient(Dial(t, served.Control, nodeToken))
}

// copyTo asks the node to push /f to dest and returns how the Copy ended.
func copyTo(t *testing.T, node pb.TransferClient, dest, destToken string) error {
	t.Helper()
	stream, err := node.Copy(context.Background(), &pb.CopyRequest{SourcePath: "/f", DestNode: dest, DestPath: "/f", DestToken: destToken})
	for err == nil {
		_, err = stream.Recv()
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// Finding 4: a Copy names its destination node; the node must not hand
// that address its own bearer token unless the address is a configured
// peer (--peer). The client may pass dest_token for any other destination.
func TestNodeTokenOnlyToConfiguredPeers(t *testing.T) {
	bin := RxferBinary(t)
	t.Run("unconfigured destination", func(t *testing.T) {
		t.Parallel()
		node, fake := tokenNode(t, bin), StartFakeDest(t, nil)
		err := copyTo(t, node, fake.Addr, "")
		if slices.Contains(fake.Tokens(), nodeToken) {
			t.Errorf("the node sent its own token to %s, an address the client named", fake.Addr)
		}
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "--peer "+fake.Addr) ||
			!strings.Contains(err.Error(), "dest_token") {
			t.Errorf("Copy to an unconfigured node without dest_token: %v; want PermissionDenied naming --peer %s and dest_token", err, fake.Addr)
		}
	})
	t.Run("the client's dest_token", func(t *testing.T) {
		t.Parallel()
		node, fake := tokenNode(t, bin), StartFakeDest(t, nil)
		copyTo(t, node, fake.Addr, "the-client-s-token-for-the-destination")
		if got := fake.Tokens(); len(got) == 0 || slices.ContainsFunc(got, func(tok string) bool { return tok != "the-client-s-token-for-the-destination" }) {
			t.Errorf("the destination saw tokens %q, want only the client's dest_token", got)
		}
	})
	t.Run("a configured peer", func(t *testing.T) {
		t.Parallel()
		fake := StartFakeDest(t, nil)
		node := tokenNode(t, bin, "--peer", "127.0.0.1:1", "--peer", fake.Addr)
		copyTo(t, node, fake.Addr, "")
		if got := fake.Tokens(); len(got) == 0 || slices.ContainsFunc(got, func(tok string) bool { return tok != nodeToken }) {
			t.Errorf("the configured peer saw tokens %q, want the node's own", got)
		}
	})
}

// Finding 9b: a token file others can read is refused, as ssh refuses such
// a key, by serve and by the client commands, naming the file, its mode and
// the fix.
func TestTokenFileReadableByOthers(t *testing.T) {
	bin := RxferBinary(t)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		tokFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokFile, []byte(nodeToken+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tokFile, mode); err != nil {
			t.Fatal(err)
		}
		want := []string{tokFile, "0" + strconv.FormatUint(uint64(mode), 8), "chmod 600 " + tokFile}
		_, exited := StartServe(t, bin, "--root", t.TempDir(), "--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0", "--token-file", tokFile)
		if exited == nil {
			t.Errorf("serve with a token file of mode %#o started", mode)
		} else if exited.Code == 0 || !containsAll(exited.Stderr, want) {
			t.Errorf("serve with a token file of mode %#o: want a failure naming %q\n%s", mode, want, exited)
		}
		for _, args := range [][]string{
			{"cp", "--token-file", tokFile, "127.0.0.1:1:/x", "127.0.0.1:2:/y"},
			{"status", "--token-file", tokFile, "127.0.0.1:1"},
		} {
			if r := RunRxfer(t, bin, args...); r.Code == 0 || !containsAll(r.Stderr, want) {
				t.Errorf("want a failure naming %q\n%s", want, r)
			}
		}
	}
}
