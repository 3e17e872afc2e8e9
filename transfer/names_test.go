package transfer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzResolvePath feeds destination paths and source names, as a peer sends
// them in Prepare, to CreateDestination beneath a root that has a
// subdirectory, a file and symlinks leading out. Whatever the input: no
// panic, no error outside the engine's sentinels (which would reach users
// as Internal), no error that echoes more than maxEcho bytes of it, nothing
// created outside the root, and a created file lies beneath the root under
// a name that passes checkPath.
func FuzzResolvePath(f *testing.F) {
	for _, seed := range [][2]string{
		{"/new", "f"}, {"/sub/", "f"}, {"/", "f"}, {"/", ".."}, {"/../x", "f"}, {"/out/x", "f"},
		{"/a\x00b", "f"}, {"/", "a\x00b"}, {"/bad\x1b[31m", "f"}, {"/", "two\nlines"}, {"/x\u009b", "f"},
		{"/" + strings.Repeat("n", 255), "f"}, {"/" + strings.Repeat("n", 256), "f"},
		{"/" + strings.Repeat("d/", 2100), "f"}, {"/sub/../sub/./f", "f"}, {"//sub//f", "f"},
		{"/file/x", "f"}, {"/\xff\xfe", "f"}, {"", ""}, {"/sub", "/"},
	} {
		f.Add(seed[0], seed[1])
	}
	base := f.TempDir() // one root for every input: each removes what it created
	dir, outside := filepath.Join(base, "root"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(dir, "sub"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "out")); err != nil {
		f.Fatal(err)
	}
	r, err := OpenRoot(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { r.Close() })
	f.Fuzz(func(t *testing.T, dest, src string) {
		d, err := r.CreateDestination(dest, src, "fuzz", 1, false)
		if names := entries(t, outside); len(names) != 0 {
			t.Fatalf("CreateDestination(%q, %q) created %q outside the root", dest, src, names)
		}
		if err != nil {
			if !engineError(err) {
				t.Fatalf("CreateDestination(%q, %q) = %v: no engine sentinel (users would see Internal)", dest, src, err)
			}
			if n := len(err.Error()); n > 4*maxEcho+512 {
				t.Fatalf("CreateDestination error of %d bytes echoes too much of the input", n)
			}
			return
		}
		defer d.Remove()
		if err := checkPath("final path", d.FinalPath); err != nil {
			t.Fatalf("CreateDestination(%q, %q) accepted final path %q: %v", dest, src, d.FinalPath, err)
		}
		// The file (unnamed with O_TMPFILE) lives in the directory d.dir holds open.
		at, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", d.dir.Fd()))
		if err != nil || (at != dir && !strings.HasPrefix(at, dir+"/")) {
			t.Fatalf("CreateDestination(%q, %q): destination directory %q (%v) not beneath the root %q", dest, src, at, err, dir)
		}
	})
}

// engineError reports whether err wraps one of the sentinels the service
// layer maps to a status code.
func engineError(err error) bool {
	for _, s := range []error{ErrNotFound, ErrExists, ErrPathEscape, ErrPermission, ErrInvalid, ErrNoSpace, ErrOutOfRange} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func TestShownCutsLongInput(t *testing.T) {
	long := strings.Repeat("a", 3<<20)
	got := shown(long)
	if len(got) > maxEcho+64 || !strings.Contains(got, "3145728 bytes") {
		t.Errorf("shown(3 MiB) = %.300q (%d bytes): want at most %d bytes of input and the length", got, len(got), maxEcho)
	}
	if got := shown("/a"); got != `"/a"` {
		t.Errorf(`shown("/a") = %s, want "/a"`, got)
	}
}
