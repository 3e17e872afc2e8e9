package hostile

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rxfer/rxfer/internal/crc32c"
	"github.com/rxfer/rxfer/transfer"
)

// dirNames lists dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// Finding 3: a second source tries to replace another transfer's partial
// file (its name was predictable from the transfer id, which ListTransfers
// shows) by preparing a transfer to exactly that name with overwrite. It is
// refused, and the victim's commit publishes the bytes it verified.
func TestPartialFileSubstitution(t *testing.T) {
	r := newReceiverNode(t)
	const chunkSize = 64 << 10
	data, evil := randomBytes(31, 2*chunkSize), randomBytes(32, 2*chunkSize)
	victim, err := r.prepare(t, "victim1", "/victim.txt", int64(len(data)), chunkSize, false)
	if err != nil {
		t.Fatal(err)
	}
	victim.sendAll(t, data)
	// Every name the partial file could have: the old pattern, and whatever
	// is in the directory now besides.
	targets := []string{"victim.txt.rxfer-partial-victim1"}
	for _, n := range dirNames(t, r.dir) {
		if !slices.Contains(targets, n) {
			targets = append(targets, n)
		}
	}
	for i, name := range targets {
		id := "evil-" + string(rune('a'+i))
		in, err := r.prepare(t, id, "/"+name, int64(len(evil)), chunkSize, true)
		if err != nil {
			if !isCode(err, transfer.ErrInvalid) {
				t.Errorf("prepare to %q: %v, want InvalidArgument", name, err)
			}
			continue
		}
		t.Errorf("a transfer to %q (another transfer's partial file) was prepared", name)
		in.sendAll(t, evil)
		if _, err := r.commit(in, evil); err != nil {
			t.Logf("the substituting transfer did not commit: %v", err)
		}
	}
	resp, err := r.commit(victim, data)
	if err != nil {
		t.Logf("victim's commit failed: %v", err) // acceptable: nothing was published
		if _, serr := os.Stat(filepath.Join(r.dir, "victim.txt")); serr == nil {
			t.Fatal("a failed commit left a file at the final path")
		}
		return
	}
	got, err := os.ReadFile(filepath.Join(r.dir, "victim.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if crc32c.Checksum(got) != resp.CRC32C || !bytes.Equal(got, data) {
		t.Fatalf("commit reported CRC %08x, but the file holds other bytes (CRC %08x)", resp.CRC32C, crc32c.Checksum(got))
	}
}

// Finding 8 (the partial-name part of finding 3's fix): every valid final
// name, up to NAME_MAX (255 bytes), can be received; the partial file's name
// no longer grows with it.
func TestLongFinalNameReceived(t *testing.T) {
	r := newReceiverNode(t)
	data := randomBytes(41, 5000)
	for _, n := range []int{200, 217, 240, 255} {
		name := strings.Repeat("n", n)
		in, err := r.prepare(t, "long-"+strings.Repeat("1", n%7+1), "/"+name, int64(len(data)), transfer.MinChunkSize, false)
		if err != nil {
			t.Fatalf("%d-byte name: prepare: %v", n, err)
		}
		in.sendAll(t, data)
		if _, err := r.commit(in, data); err != nil {
			t.Fatalf("%d-byte name: commit: %v", n, err)
		}
		if got, err := os.ReadFile(filepath.Join(r.dir, name)); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d-byte name: the received file differs (%v)", n, err)
		}
	}
}

// Finding 3: a destination name that looks like a partial file is refused
// with InvalidArgument, as a file name given directly or as the source's
// name received into a directory, and nothing is created.
func TestPartialPatternDestinationRefused(t *testing.T) {
	r := newReceiverNode(t)
	for i, req := range []transfer.PrepareRequest{
		{DestPath: "/x.rxfer-partial-abc"},
		{DestPath: "/.rxfer-partial-0123456789abcdef"},
		{DestPath: "/", SourceName: "y.rxfer-partial-7"},
	} {
		req.ID, req.SourceNode, req.Size, req.ChunkSize, req.Policy = "pattern-"+string(rune('a'+i)), "hostile", 10, transfer.MinChunkSize, transfer.PolicyTCP
		if req.SourceName == "" {
			req.SourceName = "x"
		}
		_, err := r.peer.Prepare(context.Background(), req)
		if !isCode(err, transfer.ErrInvalid) {
			t.Errorf("prepare to %q (source name %q): %v, want InvalidArgument", req.DestPath, req.SourceName, err)
		}
		if err == nil {
			r.peer.Abort(context.Background(), req.ID, "test", true)
		}
	}
	if names := dirNames(t, r.dir); len(names) != 0 {
		t.Fatalf("refused transfers left %q", names)
	}
}
