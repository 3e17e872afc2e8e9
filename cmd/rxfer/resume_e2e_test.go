package main

import (
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// resumePair is a sending daemon in NS1 and a killable receiving daemon in
// NS2 (its root at dstRoot), over a veth shaped to rate so that a copy can
// be interrupted.
func resumePair(t *testing.T, rate, dstRoot string) (p netnsPair, src *daemon, dst *killable) {
	t.Helper()
	p = newNetnsPair(t)
	shapeLink(t, p.NS1, rate)
	src = startDaemon(t, daemonConfig{NS: p.NS1, ID: "node1", Listen: p.IP1 + ":7470", DataListen: p.IP1 + ":7471", Extra: []string{"--insecure"}})
	dst = startKillable(t, daemonConfig{NS: p.NS2, ID: "node2", Root: dstRoot,
		Listen: p.IP2 + ":7470", DataListen: p.IP2 + ":7471", Extra: []string{"--insecure"}})
	return p, src, dst
}

// TestResumeRetriesAfterReceiverRestart: `rxfer cp --retries` outlives a
// kill -9 and restart of the receiving daemon: the failed attempt ends with
// a FAILED event that names the cause, the next one resumes.
func TestResumeRetriesAfterReceiverRestart(t *testing.T) {
	p, src, dst := resumePair(t, "1gbit", mountTmpfs(t, "512m"))
	const size = 96 << 20
	writeRandom(t, src.Path("r.bin"), size)
	killed := make(chan struct{})
	var once sync.Once
	ev := &cpEvents{}
	run := startRxfer(t, p.NS1, func(line string) {
		if e := ev.onLine(line); e != nil && e.State == pb.State_STATE_MOVING && e.BytesDone > 0 {
			once.Do(func() { dst.kill9(); close(killed) })
		}
	}, "cp", "--json", "--retries", "8", src.At("/r.bin"), dst.At("/r.bin"))
	select {
	case <-killed:
	case <-time.After(cliTimeout):
		t.Fatal("no progress event")
	}
	held := journaledBytes(t, dst.Root, "r.bin") // what the next attempt can resume
	dst.restart()
	r := run.Wait(t)
	if r.Code != 0 {
		t.Fatalf("copy with retries failed:\n%s", r)
	}
	sameFile(t, src.Path("r.bin"), dst.Path("r.bin"))
	var failed, final *pb.TransferInfo
	ev.mu.Lock()
	for _, e := range ev.events {
		if e.State == pb.State_STATE_FAILED && strings.Contains(e.Error, "retrying") && failed == nil {
			failed = e // the CLI's event ending the attempt (the node's own FAILED event precedes it)
		}
	}
	ev.mu.Unlock()
	final = ev.last()
	if failed == nil || failed.Attempt != 1 || !strings.Contains(failed.Error, "Unavailable") || !strings.Contains(failed.Error, "retrying") {
		t.Errorf("first attempt's end: %v; want FAILED, attempt 1, the cause (Unavailable) and the retry", failed)
	}
	// The kill comes after a chunk was acknowledged, but the journal's group
	// commit may not have written it yet on a loaded host: compare with what
	// the journal held.
	t.Logf("the journal held %d bytes at the kill; the last attempt resumed %d", held, final.ResumedBytes)
	if final.State != pb.State_STATE_COMMITTED || final.Attempt < 2 || final.ResumedBytes != held {
		t.Errorf("final event %v; want committed by a later attempt that resumed the %d journaled bytes", final, held)
	}
}

// TestResumeChangedSourceSaysWhy: a source touched between two attempts
// is copied from the start, and the CLI says why; a copy that resumes says
// how much in its last line.
func TestResumeChangedSourceSaysWhy(t *testing.T) {
	// A tmpfs root: the journal's fdatasync is instant, so chunks
	// acknowledged before the kill are journaled on a loaded host too.
	dstRoot := mountTmpfs(t, "512m")
	p, src, dst := resumePair(t, "1gbit", dstRoot)
	const size = 96 << 20
	writeRandom(t, src.Path("c.bin"), size)
	interrupt := func() {
		t.Helper()
		var once sync.Once
		run := startRxfer(t, p.NS1, func(line string) {
			var ev cpEvents
			if e := ev.onLine(line); e != nil && e.State == pb.State_STATE_MOVING && e.BytesDone > 0 {
				once.Do(func() {
					// Kill once the journal holds a chunk (records are batched
					// every 50 ms), so that there is something to resume.
					for guard := time.Now().Add(time.Minute); time.Now().Before(guard); time.Sleep(5 * time.Millisecond) {
						if n, _ := readJournaled(dstRoot, "c.bin"); n > 0 {
							break
						}
					}
					dst.kill9()
				})
			}
		}, "cp", "--json", "--retries", "0", src.At("/c.bin"), dst.At("/c.bin"))
		if r := run.Wait(t); r.Code == 0 {
			t.Fatalf("the copy was not interrupted:\n%s", r)
		}
		dst.restart()
	}
	interrupt()
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(src.Path("c.bin"), later, later); err != nil {
		t.Fatal(err)
	}
	r := rxferIn(t, p.NS1, "cp", "--retries", "0", src.At("/c.bin"), dst.At("/c.bin"))
	if r.Code != 0 || !strings.Contains(r.Stdout, "starting over: source changed: source modification time changed") {
		t.Fatalf("copy of a touched source: want success and why it started over\n%s", r)
	}
	if strings.Contains(r.lastLine(), "resumed") {
		t.Errorf("last line %q claims a resume", r.lastLine())
	}
	sameFile(t, src.Path("c.bin"), dst.Path("c.bin"))

	// Unchanged: the next interrupted copy resumes, and says so.
	os.Remove(dst.Path("c.bin"))
	interrupt()
	r = rxferIn(t, p.NS1, "cp", "--retries", "0", src.At("/c.bin"), dst.At("/c.bin"))
	if r.Code != 0 || !regexp.MustCompile(`^copied 96\.0 MiB \([0-9.]+ [KMG]iB resumed\) in `).MatchString(r.lastLine()) {
		t.Fatalf("resumed copy: want a last line like \"copied 96.0 MiB (48.0 MiB resumed) in ...\"\n%s", r)
	}
	sameFile(t, src.Path("c.bin"), dst.Path("c.bin"))
}

// TestResumeDiskFull: the destination's file system fills up in the
// middle of a copy: it fails with ResourceExhausted, the verified chunks
// stay, and once space is freed the same copy resumes.
func TestResumeDiskFull(t *testing.T) {
	root := mountTmpfs(t, "64m")
	p, src, dst := resumePair(t, "300mbit", root)
	const size = 40 << 20
	writeRandom(t, src.Path("d.bin"), size)
	var once sync.Once
	filler := dst.Path("filler")
	run := startRxfer(t, p.NS1, func(line string) {
		var ev cpEvents
		if e := ev.onLine(line); e != nil && e.State == pb.State_STATE_MOVING && e.BytesDone > 0 {
			// Take all the space the copy has not written yet.
			once.Do(func() {
				f, err := os.Create(filler)
				if err != nil {
					return
				}
				buf := make([]byte, 1<<20)
				for {
					if _, err := f.Write(buf); err != nil {
						break
					}
				}
				f.Close()
			})
		}
	}, "cp", "--json", "--retries", "0", src.At("/d.bin"), dst.At("/d.bin"))
	r := run.Wait(t)
	if r.Code != 1 || !strings.Contains(r.Stderr, "(ResourceExhausted)") {
		t.Fatalf("copy into a full file system: want exit 1 and ResourceExhausted\n%s", r)
	}
	held := journaledBytes(t, root, "d.bin")
	if held == 0 {
		t.Fatalf("no verified chunk kept after the disk filled up; root holds %v", entriesOf(t, root))
	}
	os.Remove(filler)
	r = rxferIn(t, p.NS1, "cp", "--json", "--retries", "0", src.At("/d.bin"), dst.At("/d.bin"))
	if r.Code != 0 {
		t.Fatalf("copy after freeing space failed:\n%s", r)
	}
	if e := finalEvent(t, r); e.ResumedBytes != held {
		t.Errorf("resumed %d bytes, want the %d kept", e.ResumedBytes, held)
	}
	sameFile(t, src.Path("d.bin"), dst.Path("d.bin"))
	wantEntries(t, root, "d.bin")
}

func entriesOf(t *testing.T, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
