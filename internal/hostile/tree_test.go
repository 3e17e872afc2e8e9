package hostile

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

// treePrepare is a tree's Prepare as a hostile source sends it: the root
// and the given entries (files of 10 bytes), straight to the Peer API.
func treePrepare(id, dest string, more bool, entries ...*pb.TreeEntry) *pb.PrepareRequest {
	var size int64
	for _, e := range entries {
		size += e.Size
	}
	return &pb.PrepareRequest{TransferId: id, SourceNode: "hostile", SourcePath: "/t", SourceName: "t", DestPath: dest,
		Size: size, ChunkSize: 64 << 10, Transport: pb.TransportPolicy_TRANSPORT_POLICY_TCP, TreeMore: more,
		Tree: &pb.TreeManifest{Entries: entries}}
}

func treeRoot() *pb.TreeEntry {
	return &pb.TreeEntry{Path: []byte("."), Kind: pb.TreeEntryKind_TREE_ENTRY_KIND_DIRECTORY, Mode: 0o755}
}

func treeFile(p string) *pb.TreeEntry {
	return &pb.TreeEntry{Path: []byte(p), Kind: pb.TreeEntryKind_TREE_ENTRY_KIND_FILE, Size: 10, Mode: 0o644}
}

func bigFile(p string, size int64) *pb.TreeEntry {
	return &pb.TreeEntry{Path: []byte(p), Kind: pb.TreeEntryKind_TREE_ENTRY_KIND_FILE, Size: size, Mode: 0o644}
}

func treeDir(p string) *pb.TreeEntry {
	return &pb.TreeEntry{Path: []byte(p), Kind: pb.TreeEntryKind_TREE_ENTRY_KIND_DIRECTORY, Mode: 0o755}
}

func treeLink(p, target string) *pb.TreeEntry {
	return &pb.TreeEntry{Path: []byte(p), Kind: pb.TreeEntryKind_TREE_ENTRY_KIND_SYMLINK, LinkTarget: []byte(target)}
}

// listAll lists every path beneath dir.
func listAll(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	return out
}

// Issue 17: hostile tree manifests sent straight to a destination's Peer
// API. Each gets its precise error and status code, and nothing is
// written, in the root or beside it.
func TestHostileTreeManifests(t *testing.T) {
	v := startVictim(t, victimConfig{Quiet: true, Node: func(c *transfer.Config) { c.TreeMaxEntries = 100 }})
	peer := v.peerClient(t)
	outside := filepath.Dir(v.Dir)
	// A link the victim's root already has, leading out of it, and a
	// directory the tree would merge into.
	if err := os.Symlink(outside, filepath.Join(v.Dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(v.Dir, "into"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(v.Dir, "into", "d")); err != nil {
		t.Fatal(err)
	}
	before := listAll(t, outside)
	many := []*pb.TreeEntry{treeRoot()}
	for i := range 101 {
		many = append(many, treeFile("f"+strings.Repeat("x", i)))
	}
	cases := []struct {
		name string
		dest string
		ents []*pb.TreeEntry
		code codes.Code
		msg  string
	}{
		{"dotdot", "/t", []*pb.TreeEntry{treeRoot(), treeFile("../x")}, codes.PermissionDenied, `"../x" climbs out`},
		{"absolute", "/t", []*pb.TreeEntry{treeRoot(), treeFile("/etc/x")}, codes.PermissionDenied, `"/etc/x" is absolute`},
		{"link out of the tree", "/t", []*pb.TreeEntry{treeRoot(), treeDir("d"), treeLink("d/l", "../../x")}, codes.PermissionDenied, `"d/l" points out of the tree`},
		{"link through a link", "/t", []*pb.TreeEntry{treeRoot(), treeLink("a", "."), treeDir("d"), treeLink("d/l", "../a/..")}, codes.PermissionDenied, "not a clean path"},
		{"duplicate", "/t", []*pb.TreeEntry{treeRoot(), treeFile("a"), treeFile("a")}, codes.InvalidArgument, `"a" appears twice`},
		{"file and directory", "/t", []*pb.TreeEntry{treeRoot(), treeFile("a"), treeDir("a")}, codes.InvalidArgument, "both a file and a directory"},
		{"NUL", "/t", []*pb.TreeEntry{treeRoot(), treeFile("a\x00b")}, codes.InvalidArgument, "NUL byte"},
		{"control character", "/t", []*pb.TreeEntry{treeRoot(), treeFile("a\x1b]0;x\x07")}, codes.InvalidArgument, "control character"},
		{"over the entry limit", "/t", many, codes.ResourceExhausted, "more than 100 entries (serve --tree-max-entries"},
		{"root is a link out", "/escape", []*pb.TreeEntry{treeRoot(), treeFile("a")}, codes.AlreadyExists, `"/escape" exists and is not a directory`},
		{"merge through a link", "/into", []*pb.TreeEntry{treeRoot(), treeDir("d"), treeFile("d/a")}, codes.AlreadyExists, `"/into/d" exists and is not a directory`},
		// A new root is created before its space is checked: the refusal
		// removes it (an error there once crashed the daemon).
		{"more bytes than the disk has", "/t", []*pb.TreeEntry{treeRoot(), bigFile("a", 1<<39)}, codes.ResourceExhausted, "the tree's files need 549755813888 bytes"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := treePrepare("tree"+string(rune('a'+i)), c.dest, false, c.ents...)
			if c.dest != "/t" {
				req.TreeContents = true
			}
			_, err := peer.Prepare(context.Background(), req)
			st := status.Convert(err)
			if st.Code() != c.code || !strings.Contains(st.Message(), c.msg) {
				t.Fatalf("got %v, want %v containing %q", err, c.code, c.msg)
			}
			if got := listAll(t, v.Dir); !slices.Equal(got, []string{"/escape", "/into", "/into/d"}) {
				t.Fatalf("the root holds %q", got)
			}
			if got := listAll(t, outside); !slices.Equal(got, before) {
				t.Fatalf("beside the root: %q, was %q", got, before)
			}
		})
	}
}

// Issue 17: a manifest sent in batches is counted against the limit as the
// batches arrive, and a batch that differs from the first is refused.
func TestHostileTreeBatches(t *testing.T) {
	v := startVictim(t, victimConfig{Quiet: true, Node: func(c *transfer.Config) { c.TreeMaxEntries = 100 }})
	peer := v.peerClient(t)
	batch := []*pb.TreeEntry{treeRoot()}
	for i := range 40 {
		batch = append(batch, treeDir("d"+strings.Repeat("x", i)))
	}
	var err error
	for i := range 3 {
		req := treePrepare("batches", "/t", true, batch...)
		req.TreeBatch = uint32(i)
		resp, e := peer.Prepare(context.Background(), req)
		if err = e; err != nil {
			break
		}
		if !resp.TreePending {
			t.Fatalf("a batch with tree_more was answered %v", resp)
		}
	}
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "more than 100 entries") {
		t.Fatalf("third batch: %v", err)
	}
	if _, err := peer.Prepare(context.Background(), treePrepare("differs", "/t", true, treeRoot())); err != nil {
		t.Fatal(err)
	}
	req := treePrepare("differs", "/elsewhere", false, treeFile("a"))
	req.TreeBatch = 1
	_, err = peer.Prepare(context.Background(), req)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "differs from its first batch") {
		t.Fatalf("a batch for another destination: %v", err)
	}
	req = treePrepare("orphan", "/t", false, treeFile("a"))
	req.TreeBatch = 5
	_, err = peer.Prepare(context.Background(), req)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "batch 5 of tree \"orphan\", whose earlier batches did not come") {
		t.Fatalf("a batch without its first: %v", err)
	}
	if got := listAll(t, v.Dir); len(got) != 0 {
		t.Fatalf("the root holds %q", got)
	}
}
