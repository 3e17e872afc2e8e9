package main

import (
	"path/filepath"
	"testing"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// TestRDMATreeCopy: issue 17's generated tree copied over RDMA (testbed
// only; it skips on a host) in every direction: node→node and back,
// local→node and node→local (the CLI's own node has RDMA too), compared
// entry by entry.
func TestRDMATreeCopy(t *testing.T) {
	requireRDMA(t)
	a, b := startPair(t)
	files := genTree(t, a.Path("tree"))
	local := t.TempDir()
	for _, hop := range []struct{ src, dst, final string }{
		{a.At("/tree"), b.At("/"), b.Path("tree")},
		{b.At("/tree"), a.At("/back"), a.Path("back")},
		{b.At("/tree"), local + "/pulled", filepath.Join(local, "pulled")},
		{filepath.Join(local, "pulled"), b.At("/pushed"), b.Path("pushed")},
	} {
		last, r := copyJSON(t, "-r", "--transport", "rdma", hop.src, hop.dst)
		if r.Code != 0 || last.State != pb.State_STATE_COMMITTED {
			t.Fatalf("tree copy failed:\n%s", r)
		}
		if last.Transport != pb.Transport_TRANSPORT_RDMA || last.FallbackReason != "" {
			t.Fatalf("the tree went over %v (%s), want RDMA", last.Transport, last.FallbackReason)
		}
		if last.FilesDone != int64(files) || last.FilesTotal != int64(files) {
			t.Errorf("files %d/%d, want %d", last.FilesDone, last.FilesTotal, files)
		}
		sameTree(t, a.Path("tree"), hop.final)
	}
}
