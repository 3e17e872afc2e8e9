package transfer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/rxfer/rxfer/internal/crc32c"
)

// rdmaOf returns whether every RDMA lane of an incoming transfer landed
// chunks in place in the destination window, and how many they landed so.
func rdmaOf(t *testing.T, n *Node, id string) (window bool, inPlace int64) {
	t.Helper()
	rec, err := n.incomingRecord(id)
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	in := rec.in
	rec.mu.Unlock()
	if in == nil || len(in.rdma) == 0 {
		t.Fatalf("transfer %s had no RDMA receiver", id)
	}
	window = true
	for _, r := range in.rdma {
		window = window && r.Window()
		inPlace += r.InPlace()
	}
	return window, inPlace
}

func TestRegionToRegionOverRDMA(t *testing.T) {
	p := newPair(t, testKnobs{})
	needRDMA(t, p.src)
	const size = 3<<20 + 12345
	if _, err := p.src.RegisterRegion("src", 4<<20, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := p.dst.RegisterRegion("dst", 8<<20, ""); err != nil {
		t.Fatal(err)
	}
	data := writeRandom(t, filepath.Join(p.srcDir, "f"), size)
	fillRegion(t, p.src, "src", data, 4096)
	chunks := int64(ChunkPlan{Size: size, ChunkSize: p.src.cfg.RDMA.Chunk}.Count())

	// region → region, the destination window not page-aligned
	info, err := p.src.Push(context.Background(), PushRequest{Policy: PolicyRDMA,
		SourceRegion: &RegionRef{Name: "src", Offset: 4096, Length: size},
		DestRegion:   &RegionRef{Name: "dst", Offset: 8192 + 100},
	}, p.dst.LocalPeer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Transport != TransportRDMA || info.FallbackReason != "" {
		t.Fatalf("region→region went over %v (%q), want RDMA", info.Transport, info.FallbackReason)
	}
	if got := regionBytes(t, p.dst, "dst", 8192+100, size); !bytes.Equal(got, data) || info.Result.CRC32C != crc32c.Checksum(data) {
		t.Fatal("region→region: destination window differs")
	}
	if w, n := rdmaOf(t, p.dst, info.ID); !w || n != chunks {
		t.Fatalf("region→region: window receiver %v, %d chunks landed in place; want all %d", w, n, chunks)
	}

	// file → region
	info, err = p.src.Push(context.Background(), PushRequest{Policy: PolicyRDMA, SourcePath: "f",
		DestRegion: &RegionRef{Name: "dst", Offset: 4<<20 + 1}}, p.dst.LocalPeer(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Transport != TransportRDMA {
		t.Fatalf("file→region went over %v, want RDMA", info.Transport)
	}
	if got := regionBytes(t, p.dst, "dst", 4<<20+1, size); !bytes.Equal(got, data) {
		t.Fatal("file→region: destination window differs")
	}
	if w, n := rdmaOf(t, p.dst, info.ID); !w || n != chunks {
		t.Fatalf("file→region: window receiver %v, %d chunks landed in place; want all %d", w, n, chunks)
	}
	// The earlier window is untouched by the later copy.
	if got := regionBytes(t, p.dst, "dst", 8192+100, size); !bytes.Equal(got, data) {
		t.Fatal("the first window changed")
	}
	if r := p.dst.Regions(); len(r) != 1 || r[0].InUse != 0 {
		t.Fatalf("regions after the copies: %+v, want one, not in use", r)
	}
}

// A file-backed region keeps the staging receiver (no writable long-term pin
// of a file mapping), and still receives the bytes.
func TestFileBackedRegionOverRDMAUsesStaging(t *testing.T) {
	p := newPair(t, testKnobs{})
	needRDMA(t, p.src)
	want := writeRandom(t, filepath.Join(p.dstDir, "backing"), 1<<20)
	if _, err := p.dst.RegisterRegion("fb", 0, "/backing"); err != nil {
		t.Fatal(err)
	}
	data := writeRandom(t, filepath.Join(p.srcDir, "f"), 300001)
	info, err := p.src.Push(context.Background(), PushRequest{Policy: PolicyRDMA, SourcePath: "f",
		DestRegion: &RegionRef{Name: "fb", Offset: 100}}, p.dst.LocalPeer(), nil)
	if err != nil || info.Transport != TransportRDMA {
		t.Fatalf("err %v, transport %v", err, info.Transport)
	}
	if w, _ := rdmaOf(t, p.dst, info.ID); w {
		t.Fatal("a file-backed region got the window receiver")
	}
	copy(want[100:], data)
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "backing")); !bytes.Equal(got, want) {
		t.Fatal("the file behind the region does not hold the copied window")
	}
}

// TestRegionRDMAThroughput moves 64 MiB region→region over RDMA in 1 MiB
// chunks, in place and (knobs.stagingOnly) through staging slots, interleaved;
// RXFER_REGION_ROUNDS sets the rounds (default 2).
func TestRegionRDMAThroughput(t *testing.T) {
	p := newPair(t, testKnobs{})
	needRDMA(t, p.src)
	const size = 64 << 20
	p.src.cfg.RDMA.Chunk = 1 << 20
	if _, err := p.src.RegisterRegion("src", size, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := p.dst.RegisterRegion("dst", size, ""); err != nil {
		t.Fatal(err)
	}
	data := writeRandom(t, filepath.Join(p.srcDir, "f"), size)
	fillRegion(t, p.src, "src", data, 0)
	rounds := 2
	if s := os.Getenv("RXFER_REGION_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	defer func() { knobs.stagingOnly = false }()
	for r := range rounds {
		for _, direct := range []bool{true, false} {
			knobs.stagingOnly = !direct
			fillRegion(t, p.dst, "dst", make([]byte, size), 0)
			start := time.Now()
			info, err := p.src.Push(context.Background(), PushRequest{Policy: PolicyRDMA,
				SourceRegion: &RegionRef{Name: "src", Length: size}, DestRegion: &RegionRef{Name: "dst"}}, p.dst.LocalPeer(), nil)
			el := time.Since(start)
			if err != nil || info.Transport != TransportRDMA {
				t.Fatalf("err %v, transport %v", err, info.Transport)
			}
			if got := regionBytes(t, p.dst, "dst", 0, size); !bytes.Equal(got, data) {
				t.Fatal("destination region differs")
			}
			if w, n := rdmaOf(t, p.dst, info.ID); w != direct || (direct && n != size>>20) {
				t.Fatalf("window receiver %v with %d chunks in place; want %v", w, n, direct)
			}
			mode := "staging"
			if direct {
				mode = "direct"
			}
			t.Logf("round %d: region→region 64 MiB over RDMA, %s: %v, %.1f MB/s", r, mode, el.Round(time.Millisecond), size/el.Seconds()/1e6)
		}
	}
}
