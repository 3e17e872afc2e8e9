package main

import (
	"strings"
	"testing"
)

// Regions through the CLI and two daemons: register, copy file→region,
// region→region at offsets, region→local file, errors, deregister.
func TestRegionsCLI(t *testing.T) {
	t.Parallel()
	a, b := startPair(t)
	writeRandom(t, a.Path("f.bin"), 3<<20+5)
	run := func(args ...string) result {
		t.Helper()
		r := rxfer(t, args...)
		if r.Code != 0 {
			t.Fatalf("rxfer %v failed:\n%s", args, r)
		}
		return r
	}
	run("regions", a.Control, "add", "src", "4M")
	run("regions", b.Control, "add", "dst", "8M")
	mustCopy(t, "", a.At("/f.bin"), a.Control+":@src:4K")
	mustCopy(t, "", a.Control+":@src:4K:3145733", b.Control+":@dst:1M")
	back := t.TempDir() + "/back.bin"
	mustCopy(t, "", b.Control+":@dst:1M:3145733", back)
	sameFile(t, a.Path("f.bin"), back)

	if out := run("regions", b.Control).Stdout; !strings.Contains(out, "dst") || !strings.Contains(out, "8388608") {
		t.Errorf("regions listing does not show dst with its size:\n%s", out)
	}
	wantFailure(t, rxfer(t, "cp", a.At("/f.bin"), b.Control+":@dst:6M"), 1, "OutOfRange")
	wantFailure(t, rxfer(t, "cp", a.At("/f.bin"), b.Control+":@nope"), 1, "NotFound", "nope")
	wantFailure(t, rxfer(t, "regions", b.Control, "add", "dst", "1M"), 1, "AlreadyExists")
	wantFailure(t, rxfer(t, "regions", b.Control, "add", "huge", "100G"), 1, "ResourceExhausted", "--max-registered")
	wantFailure(t, rxfer(t, "regions", b.Control, "add", "x", "12Q"), 2, "not a size")
	wantFailure(t, rxfer(t, "cp", a.At("/f.bin"), b.Control+":@dst:x"), 2, "HOST:PORT:@NAME")
	run("regions", b.Control, "rm", "dst")
	if out := run("regions", b.Control).Stdout; !strings.Contains(out, "no regions") {
		t.Errorf("after rm: %s", out)
	}
	wantFailure(t, rxfer(t, "regions", b.Control, "rm", "dst"), 1, "NotFound")
}
