package transfer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rxfer/rxfer/internal/crc32c"
)

// regionBytes reads a window of a node's region.
func regionBytes(t *testing.T, n *Node, name string, off, length int64) []byte {
	t.Helper()
	n.mu.Lock()
	r := n.regions[name]
	n.mu.Unlock()
	b := make([]byte, length)
	if _, err := r.file.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func fillRegion(t *testing.T, n *Node, name string, b []byte, off int64) {
	t.Helper()
	n.mu.Lock()
	r := n.regions[name]
	n.mu.Unlock()
	if _, err := r.file.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestRegionCopies(t *testing.T) {
	p := newPair(t, testKnobs{})
	must := func(_ RegionInfo, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(p.src.RegisterRegion("src", 2<<20, ""))
	must(p.dst.RegisterRegion("dst", 2<<20, ""))
	data := writeRandom(t, filepath.Join(p.srcDir, "f"), 300001)
	fillRegion(t, p.src, "src", data, 4096)

	// region → region, at different offsets on each side
	info, err := p.src.Push(context.Background(), PushRequest{
		SourceRegion: &RegionRef{Name: "src", Offset: 4096, Length: int64(len(data))},
		DestRegion:   &RegionRef{Name: "dst", Offset: 8192},
	}, p.dst.LocalPeer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := regionBytes(t, p.dst, "dst", 8192, int64(len(data))); !bytes.Equal(got, data) || info.Result.CRC32C != crc32c.Checksum(data) {
		t.Fatal("region→region: destination window differs")
	}
	t.Logf("region→region over %v", info.Transport)

	// file → region
	if _, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestRegion: &RegionRef{Name: "dst", Offset: 1 << 20}},
		p.dst.LocalPeer(), nil); err != nil {
		t.Fatal(err)
	}
	if got := regionBytes(t, p.dst, "dst", 1<<20, int64(len(data))); !bytes.Equal(got, data) {
		t.Fatal("file→region: destination window differs")
	}

	// region → file
	if _, err := p.src.Push(context.Background(), PushRequest{SourceRegion: &RegionRef{Name: "src", Offset: 4096, Length: int64(len(data))},
		DestPath: "/out"}, p.dst.LocalPeer(), nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "out")); !bytes.Equal(got, data) {
		t.Fatal("region→file: destination file differs")
	}
	if r := p.dst.Regions(); len(r) != 1 || r[0].InUse != 0 {
		t.Fatalf("regions after the copies: %+v, want one, not in use", r)
	}
}

func TestRegionErrors(t *testing.T) {
	p := newPair(t, testKnobs{})
	p.dst.cfg.MaxRegistered = 3 << 20
	if _, err := p.dst.RegisterRegion("dst", 1<<20, ""); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(p.srcDir, "f"), 1000)
	push := func(req PushRequest) error {
		_, err := p.src.Push(context.Background(), req, p.dst.LocalPeer(), nil)
		return err
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"window past the end", push(PushRequest{SourcePath: "f", DestRegion: &RegionRef{Name: "dst", Offset: 1<<20 - 999}}), ErrOutOfRange},
		{"unknown destination region", push(PushRequest{SourcePath: "f", DestRegion: &RegionRef{Name: "nope"}}), ErrNotFound},
		{"unknown source region", push(PushRequest{SourceRegion: &RegionRef{Name: "nope"}, DestPath: "x"}), ErrNotFound},
		{"duplicate name", second(p.dst.RegisterRegion("dst", 10, "")), ErrExists},
		{"over the node's cap", second(p.dst.RegisterRegion("big", 3<<20, "")), ErrRegionLimit},
		{"bad name", second(p.dst.RegisterRegion("a/b", 10, "")), ErrInvalid},
		{"zero size", second(p.dst.RegisterRegion("z", 0, "")), ErrInvalid},
		{"file outside the root", second(p.dst.RegisterRegion("esc", 0, "/../x")), ErrPathEscape},
		{"deregister unknown", p.dst.DeregisterRegion("nope"), ErrNotFound},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, tt.err, tt.want)
		}
	}
	if err := p.dst.DeregisterRegion("dst"); err != nil || len(p.dst.Regions()) != 0 {
		t.Fatalf("deregister: %v, regions left %v", err, p.dst.Regions())
	}
}

func TestFileBackedRegion(t *testing.T) {
	p := newPair(t, testKnobs{})
	want := writeRandom(t, filepath.Join(p.dstDir, "backing"), 64<<10)
	if _, err := p.dst.RegisterRegion("fb", 0, "/backing"); err != nil {
		t.Fatal(err)
	}
	data := writeRandom(t, filepath.Join(p.srcDir, "f"), 4096)
	if _, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestRegion: &RegionRef{Name: "fb", Offset: 100}},
		p.dst.LocalPeer(), nil); err != nil {
		t.Fatal(err)
	}
	copy(want[100:], data)
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "backing")); !bytes.Equal(got, want) {
		t.Fatal("the file behind the region does not hold the copied window")
	}
}

func second[T any](_ T, err error) error { return err }
