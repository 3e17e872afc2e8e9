package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
	"github.com/rxfer/rxfer/internal/treetest"
)

// manifest builds a manifest from "path kind" pairs (kinds d, f, l=target).
func manifest(specs ...string) *TreeManifest {
	m := &TreeManifest{Entries: []TreeEntry{{Path: ".", Kind: TreeDir, Mode: 0o755}}}
	for _, s := range specs {
		p, kind, _ := strings.Cut(s, " ")
		e := TreeEntry{Path: p, Mode: 0o644}
		switch {
		case kind == "d":
			e.Kind = TreeDir
		case kind == "f":
			e.Kind, e.Size = TreeFile, 10
		case strings.HasPrefix(kind, "l="):
			e.Kind, e.Target = TreeSymlink, kind[2:]
		}
		m.Entries = append(m.Entries, e)
	}
	return m
}

func TestValidateTreeRefusesHostileManifests(t *testing.T) {
	lim := TreeLimits{MaxEntries: 100, MaxBytes: 1 << 20}
	cases := []struct {
		name string
		m    *TreeManifest
		want error
		msg  string
	}{
		{"dotdot", manifest("../x f"), ErrPathEscape, `"../x" climbs out`},
		{"dotdot inside", manifest("a d", "a/../../x f"), ErrPathEscape, "climbs out"},
		{"absolute", manifest("/etc/passwd f"), ErrPathEscape, "is absolute"},
		{"link out", manifest("l l=../outside"), ErrPathEscape, "points out of the tree"},
		{"link absolute", manifest("l l=/etc"), ErrPathEscape, "absolute target"},
		{"link unclean", manifest("a d", "a/l l=b/../.."), ErrPathEscape, "not a clean path"},
		{"duplicate", manifest("a f", "a f"), ErrInvalid, `"a" appears twice`},
		{"file and dir", manifest("a f", "a d"), ErrInvalid, "is both a file and a directory"},
		{"inside a file", manifest("a f", "a/b f"), ErrInvalid, "inside \"a\", which is a file"},
		{"child first", manifest("a/b f", "a d"), ErrInvalid, "comes before its directory"},
		{"nul", manifest("a\x00b f"), ErrInvalid, "NUL byte"},
		{"control", manifest("a\x1b[2Jb f"), ErrInvalid, "control character"},
		{"unclean", manifest("a d", "a//b f"), ErrInvalid, "not a clean path"},
		{"partial name", manifest(".rxfer-partial-0123 f"), ErrInvalid, "partial files"},
		{"long name", manifest(strings.Repeat("n", 256) + " f"), ErrInvalid, "name of 256 bytes"},
		{"no root", &TreeManifest{Entries: []TreeEntry{{Path: "a", Kind: TreeFile}}}, ErrInvalid, "starts with its root"},
	}
	over := manifest()
	for range 100 {
		over.Entries = append(over.Entries, TreeEntry{Path: "x", Kind: TreeFile})
	}
	cases = append(cases, struct {
		name string
		m    *TreeManifest
		want error
		msg  string
	}{"too many entries", over, ErrTreeLimit, "more than 100 entries (serve --tree-max-entries"})
	big := manifest("a f")
	big.Entries[1].Path = strings.Repeat("a/", 100) + "b"
	cases = append(cases, struct {
		name string
		m    *TreeManifest
		want error
		msg  string
	}{"too many bytes", big, ErrTreeLimit, "larger than 200 bytes (serve --tree-max-manifest-bytes"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lim
			if c.name == "too many bytes" {
				l.MaxBytes = 200
			}
			_, err := ValidateTree(c.m, l)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want %v containing %q", err, c.want, c.msg)
			}
		})
	}
	good := manifest("a d", "a/b f", "a/l l=b", "a/up l=../a/b", "top l=a/b", "e d")
	if n, err := ValidateTree(good, lim); err != nil || n != 10 {
		t.Fatalf("a good manifest: %d bytes, %v", n, err)
	}
}

// FuzzTreeManifest: whatever a peer sends, the validator never panics, and
// a manifest it accepts has only clean, relative names beneath the root and
// links that cannot climb out.
func FuzzTreeManifest(f *testing.F) {
	f.Add("a", "a/b", "../x", uint8(2), "b")
	f.Add("d", "d/l", "..", uint8(3), "../..")
	f.Add("x\x00", "/abs", "a//b", uint8(1), "")
	f.Fuzz(func(t *testing.T, p1, p2, p3 string, kind uint8, target string) {
		m := &TreeManifest{Entries: []TreeEntry{{Path: ".", Kind: TreeDir}}}
		for i, p := range []string{p1, p2, p3} {
			k := TreeKind(1 + (int(kind)+i)%3)
			e := TreeEntry{Path: p, Kind: k}
			if k == TreeSymlink {
				e.Target = target
			}
			m.Entries = append(m.Entries, e)
		}
		if _, err := ValidateTree(m, TreeLimits{MaxEntries: 10, MaxBytes: 1 << 20}); err != nil {
			return
		}
		for _, e := range m.Entries[1:] {
			if strings.HasPrefix(e.Path, "/") || e.Path == ".." || strings.HasPrefix(e.Path, "../") || strings.Contains(e.Path, "/../") ||
				filepath.Clean(e.Path) != e.Path || strings.ContainsRune(e.Path, 0) {
				t.Fatalf("accepted %q", e.Path)
			}
			if e.Kind == TreeSymlink {
				resolved := filepath.Join(filepath.Dir(e.Path), e.Target)
				if strings.HasPrefix(e.Target, "/") || resolved == ".." || strings.HasPrefix(resolved, "../") {
					t.Fatalf("accepted link %q -> %q", e.Path, e.Target)
				}
			}
		}
	})
}

func TestTreeLayoutSpansFiles(t *testing.T) {
	m := manifest("a f", "b f", "c f")
	m.Entries[2].Size = 0
	m.Entries[3].Size, m.Entries[3].Data = 100, []DataRange{{10, 5}, {50, 20}}
	l := newTreeLayout(m)
	if l.size != 35 {
		t.Fatalf("size %d", l.size)
	}
	var got []treeSeg
	l.span(8, 10, func(s treeSeg) error { got = append(got, s); return nil })
	want := []treeSeg{{stream: 8, off: 8, n: 2, file: 0}, {stream: 10, off: 10, n: 5, file: 2}, {stream: 15, off: 50, n: 3, file: 2}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
	if err := l.span(30, 10, func(treeSeg) error { return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("past the end: %v", err)
	}
}

// makeTree builds a tree with nested and empty directories, small, big
// and sparse files, links inside, odd modes and set mtimes.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "a/b/c"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "empty"), 0o700))
	for i, n := range []int{0, 1, 100, 4096, 70000, 300000} {
		writeRandom(t, filepath.Join(dir, "a", "f"+string(rune('0'+i))), n)
	}
	writeRandom(t, filepath.Join(dir, "a/b/c/deep"), 5000)
	must(os.Chmod(filepath.Join(dir, "a/f2"), 0o640))
	must(os.Chmod(filepath.Join(dir, "a/f3"), 0o4755))
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	must(f.Truncate(8 << 20))
	_, err = f.WriteAt(bytes.Repeat([]byte("x"), 5000), 4<<20)
	must(err)
	f.Close()
	must(os.Symlink("a/f1", filepath.Join(dir, "link")))
	must(os.Symlink("../f2", filepath.Join(dir, "a/b/up")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	old := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if d.Type()&fs.ModeSymlink == 0 && d.Type()&fs.ModeNamedPipe == 0 {
			os.Chtimes(p, old, old.Add(time.Duration(len(p))*time.Second))
		}
		return nil
	})
}

// sameTree compares the trees entry by entry (treetest.Same).
func sameTree(t testing.TB, src, dst string) { t.Helper(); treetest.Same(t, src, dst) }

// copyTreeDirect copies a tree from p.src to p.dst through the engine's
// sink and layout, without a network transport: each chunk is read with
// the source's extents and written into the destination's.
func copyTreeDirect(t *testing.T, p *pair, req PushRequest, stopAfter int) (CommitResponse, error) {
	t.Helper()
	src, err := p.src.openSource(&req)
	if err != nil {
		return CommitResponse{}, err
	}
	defer src.close()
	tr := src.tree
	tr.m.Preserve = req.Preserve
	id := NewID()
	plan := ChunkPlan{Size: tr.layout.size, ChunkSize: MinChunkSize}
	resp, err := p.dst.Prepare(context.Background(), PrepareRequest{ID: id, SourceNode: "src", SourcePath: req.SourcePath,
		SourceName: treeName(req.SourcePath), DestPath: req.DestPath, Size: plan.Size, ChunkSize: plan.ChunkSize, Policy: PolicyTCP,
		Overwrite: req.Overwrite, Tree: tr.m, TreeContents: req.Contents, NoResume: req.NoResume})
	if err != nil {
		return CommitResponse{}, err
	}
	rec, err := p.dst.incomingRecord(id)
	if err != nil {
		t.Fatal(err)
	}
	sink := rec.in.sink().(chunk.ExtentSink)
	skip := map[uint32]bool{}
	for _, c := range resp.Resumed {
		skip[c.Index] = true
	}
	crcs := make([]uint32, plan.Count())
	for i := range plan.Count() {
		off, n := plan.Span(i)
		c := chunk.Chunk{Index: uint32(i), Offset: off, Length: uint32(n)}
		sext, err := tr.Extents(c)
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		for _, e := range sext {
			buf := make([]byte, e.Length)
			if _, err := e.File.ReadAt(buf, e.Offset); err != nil {
				t.Fatal(err)
			}
			b = append(b, buf...)
		}
		tr.cache.release(c.Index)
		c.CRC = crc32c.Checksum(b)
		crcs[i] = c.CRC
		if skip[c.Index] {
			continue
		}
		if i == stopAfter {
			return CommitResponse{}, p.dst.Abort(context.Background(), id, "test stops", false)
		}
		dext, err := sink.AdmitExtents(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range dext {
			if _, err := e.File.WriteAt(b[:e.Length], e.Offset); err != nil {
				t.Fatal(err)
			}
			b = b[e.Length:]
		}
		sink.Landed(c, nil)
	}
	if stopAfter >= 0 {
		// Let the journal's group commit write what landed.
		rec.in.stopJournal(true)
		return CommitResponse{}, p.dst.Abort(context.Background(), id, "test stops", false)
	}
	return p.dst.Commit(context.Background(), CommitRequest{ID: id, Size: plan.Size, CRC32C: plan.Combine(crcs)})
}

func TestTreeCopyThroughSink(t *testing.T) {
	p := newPair(t, testKnobs{})
	makeTree(t, filepath.Join(p.srcDir, "tree"))
	res, err := copyTreeDirect(t, p, PushRequest{SourcePath: "/tree", DestPath: "/", Recursive: true, Preserve: true}, -1)
	if err != nil {
		t.Fatal(err)
	}
	if res.FinalPath != "/tree" {
		t.Fatalf("final path %q", res.FinalPath)
	}
	sameTree(t, filepath.Join(p.srcDir, "tree"), filepath.Join(p.dstDir, "tree"))
	// No partial file or journal is left anywhere.
	filepath.WalkDir(p.dstDir, func(q string, d fs.DirEntry, err error) error {
		if strings.Contains(d.Name(), partialMarker) {
			t.Errorf("left behind: %s", q)
		}
		return nil
	})
	// A second copy without overwrite names the first file that exists.
	_, err = copyTreeDirect(t, p, PushRequest{SourcePath: "/tree", DestPath: "/tree", Recursive: true, Contents: true}, -1)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), `"/tree/a/b/c/deep" exists`) {
		t.Fatalf("second copy: %v", err)
	}
	// With it, the tree is copied again into the existing root (contents).
	if _, err := copyTreeDirect(t, p, PushRequest{SourcePath: "/tree", DestPath: "/tree", Recursive: true, Contents: true, Overwrite: true, Preserve: true}, -1); err != nil {
		t.Fatal(err)
	}
	sameTree(t, filepath.Join(p.srcDir, "tree"), filepath.Join(p.dstDir, "tree"))
}

func TestTreeWalkWarnsAndRefuses(t *testing.T) {
	dir := t.TempDir()
	root, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	os.MkdirAll(filepath.Join(dir, "t/sub"), 0o755)
	syscall.Mkfifo(filepath.Join(dir, "t/fifo"), 0o644)
	m, warnings, err := root.WalkTree("/t", TreeLimits{MaxEntries: 10, MaxBytes: 1 << 20})
	if err != nil || len(m.Entries) != 2 || len(warnings) != 1 || !strings.Contains(warnings[0], "fifo: a FIFO") {
		t.Fatalf("walk: %v %+v %q", err, m, warnings)
	}
	os.Symlink("../../etc", filepath.Join(dir, "t/sub/out"))
	_, _, err = root.WalkTree("/t", TreeLimits{MaxEntries: 10, MaxBytes: 1 << 20})
	if !errors.Is(err, ErrPathEscape) || !strings.Contains(err.Error(), `"sub/out" points out of the tree`) {
		t.Fatalf("a link out of the tree: %v", err)
	}
}

func TestTreeDirectoryNeedsRecursive(t *testing.T) {
	p := newPair(t, testKnobs{})
	os.Mkdir(filepath.Join(p.srcDir, "d"), 0o755)
	_, err := p.src.Push(context.Background(), PushRequest{SourcePath: "/d", DestPath: "/"}, p.dst.LocalPeer(), nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "copy it with -r") {
		t.Fatalf("got %v", err)
	}
}

// TestTreeHostilePrepareWritesNothing: each hostile manifest sent straight
// to a destination gets its precise error, and nothing is created.
func TestTreeHostilePrepareWritesNothing(t *testing.T) {
	p := newPair(t, testKnobs{}, func(c *Config) { c.TreeMaxEntries = 50 })
	outside := filepath.Dir(p.dstDir)
	before, _ := os.ReadDir(outside)
	over := manifest()
	for i := range 60 {
		over.Entries = append(over.Entries, TreeEntry{Path: "f" + string(rune('A'+i)), Kind: TreeFile})
	}
	for _, m := range []*TreeManifest{manifest("../x f"), manifest("/abs f"), manifest("l l=../../x"),
		manifest("a f", "a f"), manifest("a f", "a d"), over, manifest("a\x00 f")} {
		var size int64
		for _, e := range m.Entries {
			size += e.DataBytes()
		}
		_, err := p.dst.Prepare(context.Background(), PrepareRequest{ID: NewID(), SourceNode: "evil", SourcePath: "/t", SourceName: "t",
			DestPath: "/", Size: size, ChunkSize: MinChunkSize, Policy: PolicyTCP, Tree: m})
		if err == nil {
			t.Fatalf("accepted %+v", m.Entries)
		}
		if names := entries(t, p.dstDir); len(names) != 0 {
			t.Fatalf("%v: wrote %v", err, names)
		}
	}
	after, _ := os.ReadDir(outside)
	if len(after) != len(before) {
		t.Fatalf("something appeared next to the root: %d entries, was %d", len(after), len(before))
	}
}

// TestTreeResumeSkipsJournaledChunks: a copy stopped halfway keeps its
// partial files and journal; the rerun resumes the verified chunks, and a
// changed tree starts over and says why.
func TestTreeResumeSkipsJournaledChunks(t *testing.T) {
	p := newPair(t, testKnobs{})
	makeTree(t, filepath.Join(p.srcDir, "tree"))
	req := PushRequest{SourcePath: "/tree", DestPath: "/", Recursive: true, Preserve: true}
	if _, err := copyTreeDirect(t, p, req, 20); err != nil {
		t.Fatal(err)
	}
	src, err := p.src.openSource(&req)
	if err != nil {
		t.Fatal(err)
	}
	m := src.tree.m
	src.close()
	plan := ChunkPlan{Size: newTreeLayout(m).size, ChunkSize: MinChunkSize}
	resp, err := p.dst.Prepare(context.Background(), PrepareRequest{ID: NewID(), SourceNode: "src", SourcePath: "/tree", SourceName: "tree",
		DestPath: "/", Size: plan.Size, ChunkSize: plan.ChunkSize, Policy: PolicyTCP, Tree: m})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Resumed) != 20 {
		t.Fatalf("resumed %d chunks, want 20 (note %q)", len(resp.Resumed), resp.ResumeNote)
	}
	for _, i := range p.dst.List() {
		if i.State == StateMoving {
			p.dst.Abort(context.Background(), i.ID, "test", false)
		}
	}
	// A changed tree starts over and says why.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(p.srcDir, "tree/a/f5"), later, later); err != nil {
		t.Fatal(err)
	}
	src, err = p.src.openSource(&req)
	if err != nil {
		t.Fatal(err)
	}
	m = src.tree.m
	src.close()
	resp, err = p.dst.Prepare(context.Background(), PrepareRequest{ID: NewID(), SourceNode: "src", SourcePath: "/tree", SourceName: "tree",
		DestPath: "/", Size: plan.Size, ChunkSize: plan.ChunkSize, Policy: PolicyTCP, Tree: m})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Resumed) != 0 || !strings.Contains(resp.ResumeNote, "source tree changed since the partial copy") {
		t.Fatalf("a changed tree: resumed %d chunks, note %q", len(resp.Resumed), resp.ResumeNote)
	}
	for _, i := range p.dst.List() {
		if i.State == StateMoving {
			p.dst.Abort(context.Background(), i.ID, "test", false)
		}
	}
	// The rerun with the same tree completes it identical.
	if _, err := copyTreeDirect(t, p, req, -1); err != nil {
		t.Fatal(err)
	}
	sameTree(t, filepath.Join(p.srcDir, "tree"), filepath.Join(p.dstDir, "tree"))
	// Each kept tree's reservation went to the copy that resumed it: none is
	// left counted against the client.
	p.dst.quota.mu.Lock()
	defer p.dst.quota.mu.Unlock()
	for host, u := range p.dst.quota.held {
		if u.reserved != 0 || u.transfers != 0 {
			t.Errorf("client %s still holds %d bytes and %d transfers", host, u.reserved, u.transfers)
		}
	}
}

// TestTreeFileCacheBounded: a tree of many files is read with at most
// treeOpenFiles of them open beyond those pinned by chunks in flight.
func TestTreeFileCacheBounded(t *testing.T) {
	dir := t.TempDir()
	for i := range 1000 {
		if err := os.WriteFile(filepath.Join(dir, "f"+strings.Repeat("0", 4-len(fmt.Sprint(i)))+fmt.Sprint(i)), []byte("0123456789"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	m, _, err := root.WalkTree("/", TreeLimits{MaxEntries: 2000, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	src, err := newTreeSource(root, "/", m)
	if err != nil {
		t.Fatal(err)
	}
	src.cache.max = treeOpenFiles
	defer src.close()
	plan := ChunkPlan{Size: src.layout.size, ChunkSize: 100} // ten files a chunk
	most := 0
	for i := range plan.Count() {
		off, n := plan.Span(i)
		ext, err := src.Extents(chunk.Chunk{Index: uint32(i), Offset: off, Length: uint32(n)})
		if err != nil || len(ext) != 10 {
			t.Fatalf("chunk %d: %d extents, %v", i, len(ext), err)
		}
		most = max(most, src.cache.openCount())
		src.cache.release(uint32(i))
	}
	if most > treeOpenFiles+10 {
		t.Fatalf("%d files open at once, want at most %d + the 10 of a chunk", most, treeOpenFiles)
	}
}

// TestTreePushOverTCP: a tree pushed between two nodes over the real TCP
// data channel, chunks spanning files; progress counts the files.
func TestTreePushOverTCP(t *testing.T) {
	p := newPair(t, testKnobs{})
	makeTree(t, filepath.Join(p.srcDir, "tree"))
	var last Info
	info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "/tree", DestPath: "/copy", Recursive: true, Preserve: true, Policy: PolicyTCP},
		p.dst.LocalPeer(), func(i Info) { last = i })
	if err != nil {
		t.Fatal(err)
	}
	if info.State != StateCommitted || info.Result.FinalPath != "/copy" || info.FilesTotal != 10 || info.FilesDone != 10 || last.FilesDone != 10 {
		t.Fatalf("info %+v, last event %+v", info, last)
	}
	if len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], "fifo") {
		t.Errorf("warnings %q", info.Warnings)
	}
	sameTree(t, filepath.Join(p.srcDir, "tree"), filepath.Join(p.dstDir, "copy"))
}

// predatesTrees is a destination whose rxfer predates trees: it ignores the
// manifest (an unknown protobuf field) and prepares one file.
type predatesTrees struct{ Peer }

func (o predatesTrees) Prepare(ctx context.Context, req PrepareRequest) (PrepareResponse, error) {
	req.Tree, req.TreeContents, req.TreeMore, req.TreeBatch = nil, false, false, 0
	return o.Peer.Prepare(ctx, req)
}

// TestTreeToDestinationWithoutTrees: a tree pushed to a destination that
// does not know trees fails, naming why, and leaves nothing there (it
// would otherwise commit the stream's bytes as one file).
func TestTreeToDestinationWithoutTrees(t *testing.T) {
	p := newPair(t, testKnobs{})
	makeTree(t, filepath.Join(p.srcDir, "tree"))
	_, err := p.src.Push(context.Background(), PushRequest{SourcePath: "/tree", DestPath: "/copy", Recursive: true, Policy: PolicyTCP},
		predatesTrees{p.dst.LocalPeer()}, nil)
	if !errors.Is(err, ErrTransportUnavailable) || !strings.Contains(err.Error(), "does not support directory trees") {
		t.Fatalf("got %v", err)
	}
	if names := entries(t, p.dstDir); len(names) != 0 {
		t.Fatalf("the destination holds %v", names)
	}
}

// stridedOrder is a permutation of the chunks whose first k entries start
// the k runs, so k streams begin far apart.
func TestStridedOrder(t *testing.T) {
	for _, tc := range []struct{ n, k int }{{0, 4}, {3, 4}, {4, 4}, {5, 4}, {40, 4}, {257, 4}, {100, 1}, {100, 8}} {
		order := stridedOrder(tc.n, tc.k)
		if tc.k < 2 || tc.n <= tc.k {
			if order != nil {
				t.Errorf("n=%d k=%d: %v, want nil (the plain order)", tc.n, tc.k, order)
			}
			continue
		}
		seen := make([]bool, tc.n)
		for _, i := range order {
			if i < 0 || i >= tc.n || seen[i] {
				t.Fatalf("n=%d k=%d: %v is not a permutation", tc.n, tc.k, order)
			}
			seen[i] = true
		}
		if len(order) != tc.n {
			t.Fatalf("n=%d k=%d: %d entries", tc.n, tc.k, len(order))
		}
		for r := range tc.k {
			if order[r] != tc.n*r/tc.k {
				t.Errorf("n=%d k=%d: entry %d is chunk %d, want run %d's first, %d", tc.n, tc.k, r, order[r], r, tc.n*r/tc.k)
			}
		}
	}
}
