package transfer

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mappingRSS returns the resident kilobytes of the mapping that holds mem
// (its VMA's Rss line in /proc/self/smaps).
func mappingRSS(t *testing.T, mem []byte) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(mem))))
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uint64
		if n, _ := fmt.Sscanf(line, "%x-%x", &lo, &hi); n == 2 && strings.Contains(line, " ") && !strings.HasSuffix(strings.Fields(line)[0], ":") {
			in = lo <= addr && addr < hi
			continue
		}
		if in && strings.HasPrefix(line, "Rss:") {
			kb, err := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Fatalf("no mapping at %#x in smaps", addr)
	return 0
}

// A push drops the pages of its source mapping it is done with: without it a
// 1 GiB source made the sending daemon's peak RSS 1 GiB (make bench row 5).
func TestReleasePagesDropsResidentPages(t *testing.T) {
	const size = 8 << 20
	path := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// From offset 100: chunk boundaries are not page boundaries.
	mem, unmap, err := mapRange(f, 100, size-100, unix.PROT_READ)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	var sum byte
	for i := 0; i < len(mem); i += 4096 {
		sum += mem[i]
	}
	before := mappingRSS(t, mem)
	if before < 7<<10 {
		t.Fatalf("touched 8 MiB but the mapping has %d KiB resident", before)
	}
	half := int64(len(mem) / 2)
	releasePages(mem, 0, half)
	mid := mappingRSS(t, mem)
	if mid > before-3<<10 || mid < 3<<10 {
		t.Fatalf("after releasing the first half: %d KiB resident (before %d KiB)", mid, before)
	}
	releasePages(mem, half, int64(len(mem))-half)
	if after := mappingRSS(t, mem); after > 8 {
		t.Fatalf("after releasing everything: %d KiB resident; want at most the two partial pages", after)
	}
	// The bytes are still there: released pages fault back in from the page cache.
	if mem[len(mem)-1] != 0 || sum != 0 {
		t.Fatal("released mapping reads wrong bytes")
	}
	releasePages(mem, -1, 10) // out of range: ignored, no panic
	releasePages(mem, 0, int64(len(mem))+1)
}
