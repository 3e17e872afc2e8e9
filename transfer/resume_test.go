package transfer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testJournal is a header and records of a 10-chunk file.
func testJournal() (JournalHeader, []JournalRecord) {
	h := JournalHeader{ChunkSize: 64 << 10, FinalName: "g", Client: "10.0.0.1", ID: "abc",
		Source: SourceIdentity{Node: "src", Path: "/f", Size: 10*64<<10 - 5, MtimeNs: 12345, Inode: 77}}
	var recs []JournalRecord
	for i := range 10 {
		off, n := h.plan().Span(i)
		recs = append(recs, JournalRecord{Index: uint32(i), Length: uint32(n), Offset: off, CRC: uint32(i * 31)})
	}
	return h, recs
}

func encodeJournal(h JournalHeader, recs []JournalRecord) (b []byte, headerLen int) {
	b, seed := AppendJournalHeader(nil, h)
	headerLen = len(b)
	for _, r := range recs {
		b = AppendJournalRecord(b, seed, r)
	}
	return b, headerLen
}

func TestJournalRoundTripAndTornTail(t *testing.T) {
	h, recs := testJournal()
	b, hl := encodeJournal(h, recs)
	gh, got, err := ParseJournal(b)
	if err != nil || gh != (JournalHeader{Version: journalVersion, ChunkSize: h.ChunkSize, Source: h.Source, FinalName: "g", Client: h.Client, ID: h.ID}) || len(got) != len(recs) {
		t.Fatalf("parsed %+v, %d records, %v; want the header and %d records", gh, len(got), err, len(recs))
	}
	// Cut anywhere: the records before the cut survive, intact.
	for cut := hl; cut < len(b); cut++ {
		_, got, err := ParseJournal(b[:cut])
		if want := (cut - hl) / journalRecLen; err != nil || len(got) != want {
			t.Fatalf("cut at %d: %d records, %v; want %d", cut, len(got), err, want)
		}
	}
	// A damaged record ends what is trusted.
	bad := bytes.Clone(b)
	bad[hl+3*journalRecLen+5] ^= 1
	if _, got, _ := ParseJournal(bad); len(got) != 3 {
		t.Fatalf("a damaged 4th record: %d records, want 3", len(got))
	}
	// A damaged header is no journal.
	bad = bytes.Clone(b)
	bad[20] ^= 1
	if _, _, err := ParseJournal(bad); err == nil {
		t.Fatal("a damaged header parsed")
	}
	// A record from another journal does not fit this one's seed.
	other := h
	other.ID = "def"
	ob, ohl := encodeJournal(other, recs)
	spliced := append(bytes.Clone(b[:hl]), ob[ohl:]...)
	if _, got, _ := ParseJournal(spliced); len(got) != 0 {
		t.Fatalf("records of another journal: %d accepted, want 0", len(got))
	}
}

func FuzzParseJournal(f *testing.F) {
	h, recs := testJournal()
	b, hl := encodeJournal(h, recs)
	f.Add(b)
	f.Add(b[:hl+30])
	f.Add(b[:hl-1])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, recs, err := ParseJournal(b)
		if err != nil {
			return
		}
		plan := h.plan()
		seen := map[uint32]bool{}
		for _, r := range recs {
			off, n := plan.Span(int(r.Index))
			if int(r.Index) >= plan.Count() || r.Offset != off || int64(r.Length) != n || seen[r.Index] {
				t.Fatalf("record %+v does not fit the plan %+v (or repeats)", r, plan)
			}
			seen[r.Index] = true
		}
	})
}

// failPush pushes f to g with chunk bad corrupted on every attempt, so the
// push fails once the other chunks had their chance; it returns the bytes
// the destination's journal holds then.
func failPush(t *testing.T, p *pair, bad uint32) int64 {
	t.Helper()
	knobs.corruptChunk = func(i uint32, _ int) bool { return i == bad }
	defer func() { knobs.corruptChunk = nil }()
	if _, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g"}, p.dst.LocalPeer(), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("push with chunk %d corrupted: %v, want ErrCorrupt", bad, err)
	}
	return journaled(t, p)
}

// journaled is the bytes g's journal records.
func journaled(t *testing.T, p *pair) int64 {
	t.Helper()
	b, err := os.ReadFile(journalPath(p))
	if err != nil {
		t.Fatalf("no journal kept: %v", err)
	}
	_, recs, err := ParseJournal(b)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, r := range recs {
		n += int64(r.Length)
	}
	return n
}

func journalPath(p *pair) string { return filepath.Join(p.dstDir, resumableName("g")+journalSuffix) }

// resumePush pushes f to g again and checks the result is f's bytes.
func resumePush(t *testing.T, p *pair, want []byte, req PushRequest) Info {
	t.Helper()
	req.SourcePath, req.DestPath = "f", "g"
	info, err := p.src.Push(context.Background(), req, p.dst.LocalPeer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "g")); !bytes.Equal(got, want) {
		t.Fatal("destination differs from the source after the resumed copy")
	}
	if names := entries(t, p.dstDir); len(names) != 1 {
		t.Fatalf("destination holds %v after the commit, want only g", names)
	}
	return info
}

func TestResumeAfterFailure(t *testing.T) {
	p := newPair(t, testKnobs{})
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 20*64<<10+100)
	held := failPush(t, p, 7)
	if held == 0 {
		t.Fatal("the failed push journaled nothing")
	}
	if l := p.dst.List(); len(l) == 0 || !l[0].Resumable {
		t.Fatalf("destination lists %+v, want the failed transfer resumable", l)
	}
	info := resumePush(t, p, want, PushRequest{})
	if info.ResumedBytes != held {
		t.Fatalf("resumed %d bytes, want the %d journaled", info.ResumedBytes, held)
	}
}

func TestResumeRechecksChunksOnDisk(t *testing.T) {
	p := newPair(t, testKnobs{})
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 20*64<<10)
	held := failPush(t, p, 19)
	// Flip a byte inside a chunk the journal claims (which chunks were
	// verified before chunk 19 failed for good depends on scheduling).
	jb, err := os.ReadFile(journalPath(p))
	if err != nil {
		t.Fatal(err)
	}
	_, recs, err := ParseJournal(jb)
	if err != nil || len(recs) == 0 {
		t.Fatalf("journal: %d records, %v; want at least one", len(recs), err)
	}
	partial := filepath.Join(p.dstDir, resumableName("g"))
	f, err := os.OpenFile(partial, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := recs[0].Offset + 17
	var b [1]byte
	f.ReadAt(b[:], at)
	b[0] ^= 0x40
	f.WriteAt(b[:], at)
	f.Close()
	info := resumePush(t, p, want, PushRequest{})
	if info.ResumedBytes != held-64<<10 || !strings.Contains(info.ResumeNote, "failed their CRC32C check") {
		t.Fatalf("resumed %d bytes (note %q), want %d: all journaled chunks but the damaged one", info.ResumedBytes, info.ResumeNote, held-64<<10)
	}
}

func TestResumeTornJournal(t *testing.T) {
	p := newPair(t, testKnobs{})
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 20*64<<10)
	failPush(t, p, 19)
	b, err := os.ReadFile(journalPath(p))
	if err != nil {
		t.Fatal(err)
	}
	_, hl := encodeJournal(journalHeaderOf(t, b))
	recs := (len(b) - hl) / journalRecLen
	if recs < 3 {
		t.Fatalf("only %d records journaled", recs)
	}
	// Cut in the middle of the third record: two intact ones remain.
	if err := os.Truncate(journalPath(p), int64(hl+2*journalRecLen+journalRecLen/2)); err != nil {
		t.Fatal(err)
	}
	info := resumePush(t, p, want, PushRequest{})
	if info.ResumedBytes != 2*64<<10 {
		t.Fatalf("resumed %d bytes, want the 2 intact records' %d", info.ResumedBytes, 2*64<<10)
	}
}

// journalHeaderOf returns a journal's header (and no records).
func journalHeaderOf(t *testing.T, b []byte) (JournalHeader, []JournalRecord) {
	t.Helper()
	h, _, err := ParseJournal(b)
	if err != nil {
		t.Fatal(err)
	}
	return h, nil
}

func TestResumeChangedSourceStartsOver(t *testing.T) {
	p := newPair(t, testKnobs{})
	src := filepath.Join(p.srcDir, "f")
	want := writeRandom(t, src, 20*64<<10)
	failPush(t, p, 10)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(src, later, later); err != nil {
		t.Fatal(err)
	}
	info := resumePush(t, p, want, PushRequest{})
	if info.ResumedBytes != 0 || !strings.Contains(info.ResumeNote, "source changed") || !strings.Contains(info.ResumeNote, "modification time") {
		t.Fatalf("resumed %d bytes, note %q; want 0 and why", info.ResumedBytes, info.ResumeNote)
	}
}

func TestResumeWithAnotherChunkSize(t *testing.T) {
	p := newPair(t, testKnobs{})
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 20*64<<10+1000)
	held := failPush(t, p, 19)
	info := resumePush(t, p, want, PushRequest{ChunkSize: 128 << 10})
	if info.ResumedBytes == 0 || info.ResumedBytes > held {
		t.Fatalf("resumed %d bytes in 128 KiB chunks of %d journaled in 64 KiB chunks", info.ResumedBytes, held)
	}
}

func TestNoResumeStartsOverAndDiscards(t *testing.T) {
	p := newPair(t, testKnobs{})
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 20*64<<10)
	failPush(t, p, 5)
	info := resumePush(t, p, want, PushRequest{NoResume: true})
	if info.ResumedBytes != 0 {
		t.Fatalf("resumed %d bytes with NoResume", info.ResumedBytes)
	}
}

func TestKeptPartialCountsAgainstClientReservation(t *testing.T) {
	const size = 20 * 64 << 10
	p := newPair(t, testKnobs{}, func(c *Config) { c.MaxReservedPerClient = size + size/2 })
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), size)
	writeRandom(t, filepath.Join(p.srcDir, "other"), size)
	failPush(t, p, 5)
	_, err := p.src.Push(context.Background(), PushRequest{SourcePath: "other", DestPath: "other"}, p.dst.LocalPeer(), nil)
	if !errors.Is(err, ErrQuota) {
		t.Fatalf("another copy while a kept partial file holds the reservation: %v, want ErrQuota", err)
	}
	resumePush(t, p, want, PushRequest{}) // resuming the kept one takes its own reservation over
	if _, err := p.src.Push(context.Background(), PushRequest{SourcePath: "other", DestPath: "other"}, p.dst.LocalPeer(), nil); err != nil {
		t.Fatalf("after the resume committed: %v", err)
	}
}

func TestSweepRoot(t *testing.T) {
	p := newPair(t, testKnobs{})
	writeRandom(t, filepath.Join(p.srcDir, "f"), 20*64<<10)
	failPush(t, p, 5) // g's partial file: fresh
	// An expired one beside it: a copy of g's, its journal written long ago.
	sub := filepath.Join(p.dstDir, "sub")
	os.Mkdir(sub, 0o755)
	for _, suffix := range []string{"", journalSuffix} {
		b, _ := os.ReadFile(filepath.Join(p.dstDir, resumableName("g")+suffix))
		os.WriteFile(filepath.Join(sub, resumableName("g")+suffix), b, 0o644)
	}
	old := time.Now().Add(-2 * DefaultPartialTTL)
	os.Chtimes(filepath.Join(sub, resumableName("g")+journalSuffix), old, old)
	// A partial file without a journal (a daemon killed in a copy that did
	// not resume) and a journal without its partial file.
	os.WriteFile(filepath.Join(sub, partialMarker+"0123456789abcdef"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(sub, partialMarker+"fedcba9876543210"+journalSuffix), []byte("x"), 0o644)

	// A node starting on the root sweeps it.
	n := NewNode(Config{ID: "restarted", Root: p.dstRoot, Logger: p.dst.log})
	defer n.Shutdown()
	n.StartSweeper()
	if names := entries(t, sub); len(names) != 0 {
		t.Fatalf("sub holds %v after the sweep, want nothing", names)
	}
	if names := entries(t, p.dstDir); len(names) != 3 { // g's partial, its journal, sub
		t.Fatalf("root holds %v after the sweep, want the fresh partial file kept", names)
	}
	l := n.List()
	if len(l) != 1 || !l[0].Resumable || l[0].DestPath != "/g" {
		t.Fatalf("restarted node lists %+v, want the kept partial file of /g", l)
	}
	// It expires once the TTL has passed.
	n.ExpirePartials(time.Now().Add(2 * DefaultPartialTTL))
	if names := entries(t, p.dstDir); len(names) != 1 {
		t.Fatalf("root holds %v after expiry, want only sub", names)
	}
}

// A resumable partial file has a name: no region may be registered over it
// (or its journal), which would let a client write into verified chunks.
func TestRegionOverPartialFileRefused(t *testing.T) {
	p := newPair(t, testKnobs{})
	writeRandom(t, filepath.Join(p.srcDir, "f"), 20*64<<10)
	failPush(t, p, 5)
	for _, name := range []string{resumableName("g"), resumableName("g") + journalSuffix} {
		if _, err := p.dst.RegisterRegion("r", 0, "/"+name); !errors.Is(err, ErrInvalid) {
			t.Errorf("region over %s: %v, want ErrInvalid", name, err)
		}
	}
}
