package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/internal/treetest"
)

// genTree writes the tree issue 17's tests copy: nested and empty
// directories, small, big and sparse files, links inside the tree, odd
// modes, a FIFO (skipped with a warning) and set mtimes. It returns the
// number of regular files and links.
func genTree(t testing.TB, dir string) int {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "a/b/c"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "empty/inner"), 0o700))
	files := 0
	for i, n := range []int64{0, 1, 100, 4096, 65535, 65537, 3<<20 + 5} {
		writeRandom(t, filepath.Join(dir, "a", fmt.Sprintf("f%d", i)), n)
		files++
	}
	writeRandom(t, filepath.Join(dir, "a/b/c/deep"), 5000)
	must(os.Chmod(filepath.Join(dir, "a/f2"), 0o640))
	must(os.Chmod(filepath.Join(dir, "a/f3"), 0o4755))
	must(os.Chmod(filepath.Join(dir, "a/b"), 0o750))
	f, err := os.Create(filepath.Join(dir, "sparse"))
	must(err)
	must(f.Truncate(64 << 20))
	_, err = f.WriteAt(bytes.Repeat([]byte("data"), 2000), 32<<20)
	must(err)
	must(f.Close())
	must(os.Symlink("a/f1", filepath.Join(dir, "link")))
	must(os.Symlink("../f2", filepath.Join(dir, "a/b/up")))
	must(syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	files += 4 // deep, sparse and the two links
	old := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&(fs.ModeSymlink|fs.ModeNamedPipe) == 0 {
			os.Chtimes(p, old, old.Add(time.Duration(len(p))*time.Second))
		}
		return nil
	})
	return files
}

// sameTree compares the trees entry by entry (treetest.Same).
func sameTree(t testing.TB, src, dst string) { t.Helper(); treetest.Same(t, src, dst) }

var treeSummary = regexp.MustCompile(`^copied (\d+) files?, [0-9.]+ ([KMG]i)?B in [0-9.]+s `)

// mustCopyTree runs `rxfer cp -r` and checks its last line counts files.
func mustCopyTree(t testing.TB, ns string, files int, args ...string) result {
	t.Helper()
	r := mustCopy(t, ns, append([]string{"-r"}, args...)...)
	m := treeSummary.FindStringSubmatch(r.lastLine())
	if m == nil || m[1] != fmt.Sprint(files) {
		t.Fatalf("last line %q, want \"copied %d files, ...\"\n%s", r.lastLine(), files, r)
	}
	return r
}

// TestTreeCopyEveryDirection: issue 17's generated tree copied
// local→node, node→node and node→local over TCP between real daemons,
// compared entry by entry after each hop; SRC/ copies the contents.
func TestTreeCopyEveryDirection(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	local := t.TempDir()
	src := filepath.Join(local, "tree")
	files := genTree(t, src)

	r := mustCopyTree(t, "", files, src, a.At("/"))
	if !strings.Contains(r.Stdout, "warning: skipped fifo: a FIFO") {
		t.Errorf("no warning about the FIFO\n%s", r)
	}
	sameTree(t, src, a.Path("tree"))

	// node→node into a path that does not exist: it becomes the root.
	mustCopyTree(t, "", files, a.At("/tree"), b.At("/copy"))
	sameTree(t, src, b.Path("copy"))

	// node→local into an existing directory: the tree goes inside it.
	out := filepath.Join(local, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	mustCopyTree(t, "", files, b.At("/copy"), out)
	sameTree(t, src, filepath.Join(out, "copy"))

	// SRC/: the contents into an existing directory, local→node.
	if err := os.Mkdir(b.Path("contents"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustCopyTree(t, "", files, src+"/", b.At("/contents"))
	sameTree(t, src, b.Path("contents"))

	// Copying again without --force names the first file that exists.
	r = rxfer(t, "cp", "-r", src+"/", b.At("/contents"))
	wantFailure(t, r, 1, "AlreadyExists", `"/contents/a/b/c/deep" exists`)

	// A file with -r is copied as without it.
	one := filepath.Join(local, "one.bin")
	writeRandom(t, one, 1000)
	r = mustCopy(t, "", "-r", one, b.At("/one.bin"))
	if !strings.HasPrefix(r.lastLine(), "copied 1000 B in ") {
		t.Errorf("a file with -r: last line %q", r.lastLine())
	}
	sameFile(t, one, b.Path("one.bin"))

	// A directory without -r says to add it.
	r = rxfer(t, "cp", src, b.At("/x"))
	wantFailure(t, r, 1, "InvalidArgument", "is a directory; copy it with -r")
}

// TestTreeJSONEvents: --json events of a tree carry files_done,
// files_total and the current file.
func TestTreeJSONEvents(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	files := genTree(t, a.Path("tree"))
	events := mustCopyJSON(t, "-r", a.At("/tree"), b.At("/"))
	last := events[len(events)-1]
	if last.State != pb.State_STATE_COMMITTED || last.FilesTotal != int64(files) || last.FilesDone != int64(files) {
		t.Fatalf("last event: %v", last)
	}
	sawFile := false
	for _, e := range events {
		sawFile = sawFile || len(e.CurrentFile) > 0
	}
	if !sawFile {
		t.Error("no event names a current file")
	}
	sameTree(t, a.Path("tree"), b.Path("tree"))
}

// TestTreeShapes: trees with no file, one file, 10,000 entries in one
// directory, nesting 64 deep and names of 255 bytes.
func TestTreeShapes(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonConfig{ID: "node"})
	local := t.TempDir()
	shapes := map[string]func(dir string) int{
		"empty": func(dir string) int { return 0 },
		"one file": func(dir string) int {
			writeRandom(t, filepath.Join(dir, "only"), 12345)
			return 1
		},
		"10000 entries": func(dir string) int {
			for i := range 10000 {
				writeFile(t, filepath.Join(dir, fmt.Sprintf("e%05d", i)), []byte(fmt.Sprint(i)))
			}
			return 10000
		},
		"64 deep": func(dir string) int {
			p := dir
			for i := range 64 {
				p = filepath.Join(p, fmt.Sprintf("d%d", i))
			}
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(p, "bottom"), []byte("deep"))
			return 1
		},
		"255-byte names": func(dir string) int {
			long := strings.Repeat("n", 255)
			if err := os.Mkdir(filepath.Join(dir, long), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, long, strings.Repeat("m", 255)), []byte("long"))
			return 1
		},
	}
	for name, build := range shapes {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(local, strings.ReplaceAll(name, " ", "-"))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			files := build(dir)
			mustCopyTree(t, "", files, dir, d.At("/"))
			sameTree(t, dir, d.Path(filepath.Base(dir)))
		})
	}
}

// TestTreeResumeAfterReceiverKill: kill -9 of the receiving daemon in the
// middle of a tree, a restart, the same copy again: the tree ends
// identical and the rerun skips the chunks its journal held.
func TestTreeResumeAfterReceiverKill(t *testing.T) {
	dstRoot := mountTmpfs(t, "512m")
	p, src, dst := resumePair(t, "500mbit", dstRoot)
	tree := src.Path("tree")
	for i := range 24 {
		if i%8 == 0 {
			if err := os.MkdirAll(filepath.Join(tree, fmt.Sprintf("d%d", i)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeRandom(t, filepath.Join(tree, fmt.Sprintf("d%d", i/8*8), fmt.Sprintf("f%d", i)), 4<<20+int64(i))
	}
	journal := filepath.Join(dstRoot, "tree", ".rxfer-partial-tjournal.journal")
	var once sync.Once
	var id string
	run := startRxfer(t, p.NS1, func(line string) {
		var ev cpEvents
		if e := ev.onLine(line); e != nil && e.State == pb.State_STATE_MOVING && e.BytesDone > 0 {
			once.Do(func() {
				id = e.TransferId
				// Kill once the journal holds a record beyond its header.
				for guard := time.Now().Add(time.Minute); time.Now().Before(guard); time.Sleep(5 * time.Millisecond) {
					if st, err := os.Stat(journal); err == nil && st.Size() > 200 {
						break
					}
				}
				dst.kill9()
			})
		}
	}, "cp", "-r", "--json", "--retries", "0", src.At("/tree"), dst.At("/"))
	if r := run.Wait(t); r.Code == 0 {
		t.Fatalf("the copy was not interrupted:\n%s", r)
	}
	dst.restart()
	// The restarted daemon lists the kept tree (its start-up sweep found
	// the journal), so that cancel --discard could reach it.
	waitResumable(t, p.NS2, dst.Control, id)
	r := rxferIn(t, p.NS1, "cp", "-r", "--json", "--retries", "0", src.At("/tree"), dst.At("/"))
	if r.Code != 0 {
		t.Fatalf("the rerun failed:\n%s", r)
	}
	final := finalEvent(t, r)
	if final.State != pb.State_STATE_COMMITTED || final.ResumedBytes == 0 {
		t.Fatalf("the rerun resumed nothing: %v", final)
	}
	sameTree(t, tree, filepath.Join(dstRoot, "tree"))
	filepath.WalkDir(dstRoot, func(q string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".rxfer-partial-") {
			t.Errorf("left behind: %s", q)
		}
		return nil
	})
}

// TestTreeCancelDiscard: a tree copy cancelled on its source leaves the
// destination a resumable partial tree; `rxfer cancel --discard` there
// removes all of it, the partial files in its subdirectories too (it once
// removed only the journal, leaving them to the start-up sweep).
func TestTreeCancelDiscard(t *testing.T) {
	dstRoot := mountTmpfs(t, "512m")
	p, src, dst := resumePair(t, "500mbit", dstRoot)
	tree := src.Path("tree")
	for i := range 24 {
		dir := filepath.Join(tree, fmt.Sprintf("d%d", i/8))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeRandom(t, filepath.Join(dir, fmt.Sprintf("f%d", i)), 4<<20)
	}
	journal := filepath.Join(dstRoot, "tree", ".rxfer-partial-tjournal.journal")
	moving := make(chan string, 1)
	run := startRxfer(t, p.NS1, func(line string) {
		var ev cpEvents
		if e := ev.onLine(line); e != nil && e.State == pb.State_STATE_MOVING && e.BytesDone > 0 {
			select {
			case moving <- e.TransferId:
			default:
			}
		}
	}, "cp", "-r", "--json", "--retries", "0", src.At("/tree"), dst.At("/"))
	var id string
	select {
	case id = <-moving:
	case <-time.After(cliTimeout):
		t.Fatalf("the copy never moved:\n%s", run.Wait(t))
	}
	for guard := time.Now().Add(time.Minute); time.Now().Before(guard); time.Sleep(5 * time.Millisecond) {
		if st, err := os.Stat(journal); err == nil && st.Size() > 200 {
			break // a chunk is journaled: there is something to keep
		}
	}
	if r := rxferIn(t, p.NS1, "cancel", src.Control, id); r.Code != 0 {
		t.Fatalf("cancel on the source:\n%s", r)
	}
	if r := run.Wait(t); r.Code == 0 {
		t.Fatalf("the copy was not cancelled:\n%s", r)
	}
	waitResumable(t, p.NS2, dst.Control, id) // the destination heard the source's abort and kept the tree
	partials := func() (n int) {
		filepath.WalkDir(dstRoot, func(q string, d fs.DirEntry, err error) error {
			if err == nil && strings.Contains(d.Name(), ".rxfer-partial-") {
				n++
			}
			return nil
		})
		return n
	}
	if partials() < 2 {
		t.Fatalf("the kept tree has %d partial files; the test needs some beside its journal", partials())
	}
	if r := rxferIn(t, p.NS2, "cancel", "--discard", dst.Control, id); r.Code != 0 || !strings.Contains(r.Stdout, "discarded") {
		t.Fatalf("cancel --discard on the destination:\n%s", r)
	}
	if n := partials(); n != 0 {
		t.Errorf("%d partial files left behind by cancel --discard", n)
	}
}

// waitResumable waits, at most 30 s, until `rxfer status` of the node at
// control lists transfer id as resumable.
func waitResumable(t *testing.T, ns, control, id string) {
	t.Helper()
	for guard := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := rxferIn(t, ns, "status", control)
		if regexp.MustCompile(regexp.QuoteMeta(id) + `\s.*resumable`).MatchString(r.Stdout) {
			return
		}
		if time.Now().After(guard) {
			t.Fatalf("%s does not list %s as resumable:\n%s", control, id, r)
		}
	}
}
