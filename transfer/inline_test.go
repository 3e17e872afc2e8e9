package transfer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rxfer/rxfer/internal/crc32c"
)

// countingPeer records what a push asked of the destination; strip makes it
// an older destination that ignores inline bytes.
type countingPeer struct {
	Peer
	strip            bool
	prepares, commit atomic.Int32
	inline           atomic.Int32
}

func (c *countingPeer) Prepare(ctx context.Context, req PrepareRequest) (PrepareResponse, error) {
	c.prepares.Add(1)
	if req.Inline != nil {
		c.inline.Add(1)
	}
	if c.strip {
		req.Inline = nil
	}
	return c.Peer.Prepare(ctx, req)
}

func (c *countingPeer) Commit(ctx context.Context, req CommitRequest) (CommitResponse, error) {
	c.commit.Add(1)
	return c.Peer.Commit(ctx, req)
}

// A small file is one round trip: its bytes ride in Prepare, which commits
// them; no data connection, no Commit. Larger files and an older destination
// take the usual path.
func TestInlineSmallCopy(t *testing.T) {
	p := newPair(t, testKnobs{})
	for _, tc := range []struct {
		size       int
		strip      bool
		wantInline bool
	}{{1, false, true}, {4096, false, true}, {MaxInlineSize, false, true}, {MaxInlineSize + 1, false, false}, {4096, true, true}} {
		want := writeRandom(t, filepath.Join(p.srcDir, "f"), tc.size)
		peer := &countingPeer{Peer: p.dst.LocalPeer(), strip: tc.strip}
		info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "out", Overwrite: true, Policy: PolicyTCP}, peer, nil)
		if err != nil {
			t.Fatalf("%d bytes (older destination %v): %v", tc.size, tc.strip, err)
		}
		got, _ := os.ReadFile(filepath.Join(p.dstDir, "out"))
		if !bytes.Equal(got, want) || info.Result == nil || info.Result.CRC32C != crc32c.Checksum(want) || info.BytesDone != int64(tc.size) {
			t.Fatalf("%d bytes: destination differs or result wrong: %+v", tc.size, info.Result)
		}
		if sent := peer.inline.Load() == 1; sent != tc.wantInline {
			t.Errorf("%d bytes: inline sent %v, want %v", tc.size, sent, tc.wantInline)
		}
		wantCommits := int32(1)
		if tc.wantInline && !tc.strip {
			wantCommits = 0
		}
		if peer.prepares.Load() != 1 || peer.commit.Load() != wantCommits {
			t.Errorf("%d bytes (older destination %v): %d Prepare, %d Commit; want 1 and %d", tc.size, tc.strip, peer.prepares.Load(), peer.commit.Load(), wantCommits)
		}
	}
}

// A source's inline bytes are checked like any chunk: bytes that do not
// match their CRC32C, or do not match the size, never become the file.
func TestInlineHostileSource(t *testing.T) {
	p := newPair(t, testKnobs{})
	base := func() PrepareRequest {
		return PrepareRequest{ID: NewID(), SourceNode: "evil", SourcePath: "x", DestPath: "victim", Size: 4, ChunkSize: 1 << 20,
			Policy: PolicyTCP, Inline: &InlineData{Bytes: []byte("abcd"), CRC32C: crc32c.Checksum([]byte("abcd"))}}
	}
	for _, tc := range []struct {
		name string
		edit func(*PrepareRequest)
		want error
		msg  string
	}{
		{"wrong CRC", func(r *PrepareRequest) { r.Inline.CRC32C ^= 1 }, ErrCorrupt, "CRC32C"},
		{"short", func(r *PrepareRequest) { r.Size = 5 }, ErrInvalid, "4 inline bytes for a 5-byte file"},
		{"too large", func(r *PrepareRequest) {
			r.Inline.Bytes = make([]byte, MaxInlineSize+1)
			r.Size = MaxInlineSize + 1
		}, ErrInvalid, "exceed the limit"},
		{"region", func(r *PrepareRequest) { r.DestRegion = &RegionRef{Name: "r", Length: 4} }, ErrInvalid, "region"},
		{"mac", func(r *PrepareRequest) { r.MACKey = make([]byte, 32) }, ErrInvalid, "MAC"},
		{"tree", func(r *PrepareRequest) {
			r.Tree = &TreeManifest{Entries: []TreeEntry{{Path: ".", Kind: TreeDir, Mode: 0o755}, {Path: "a", Kind: TreeFile, Size: 4, Mode: 0o644}}}
		}, ErrInvalid, "tree manifest"},
	} {
		req := base()
		tc.edit(&req)
		resp, err := p.dst.Prepare(context.Background(), req)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || resp.Committed != nil {
			t.Errorf("%s: %v (committed %v); want %v naming %q", tc.name, err, resp.Committed != nil, tc.want, tc.msg)
		}
		entries, _ := os.ReadDir(p.dstDir)
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") || e.Name() == "victim" {
				t.Errorf("%s: %s left in the destination", tc.name, e.Name())
			}
		}
	}
	// The well-formed request commits, and only once: the same id again is refused.
	req := base()
	resp, err := p.dst.Prepare(context.Background(), req)
	if err != nil || resp.Committed == nil || resp.Committed.CRC32C != req.Inline.CRC32C {
		t.Fatalf("valid inline Prepare: %v, %+v", err, resp.Committed)
	}
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "victim")); string(got) != "abcd" {
		t.Fatalf("victim holds %q", got)
	}
	if _, err := p.dst.Commit(context.Background(), CommitRequest{ID: req.ID, Size: 4, CRC32C: req.Inline.CRC32C}); err == nil {
		t.Error("a second Commit of an inline transfer succeeded")
	}
}
