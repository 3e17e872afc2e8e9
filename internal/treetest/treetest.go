// Package treetest compares directory trees for the tests of rxfer's tree
// copies (transfer's engine tests and cmd/rxfer's end-to-end ones).
package treetest

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Same compares the trees entry by entry: type, content, mode, mtime and
// link targets; a sparse source file (less than half its size allocated)
// must stay sparse, and FIFOs must not be copied. It fails t when nothing
// was compared.
func Same(t testing.TB, src, dst string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		var a, b unix.Stat_t
		if err := unix.Lstat(p, &a); err != nil {
			return err
		}
		if a.Mode&unix.S_IFMT == unix.S_IFIFO {
			if _, err := os.Lstat(q); err == nil {
				t.Errorf("%s: a FIFO was copied", rel)
			}
			return nil
		}
		if err := unix.Lstat(q, &b); err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		n++
		switch {
		case a.Mode != b.Mode:
			t.Errorf("%s: mode %o, want %o", rel, b.Mode, a.Mode)
		case a.Mode&unix.S_IFMT != unix.S_IFLNK && a.Mtim != b.Mtim:
			t.Errorf("%s: mtime %v, want %v", rel, b.Mtim, a.Mtim)
		}
		switch a.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			x, _ := os.Readlink(p)
			y, _ := os.Readlink(q)
			if x != y {
				t.Errorf("%s: link to %q, want %q", rel, y, x)
			}
		case unix.S_IFREG:
			x, _ := os.ReadFile(p)
			y, _ := os.ReadFile(q)
			if !bytes.Equal(x, y) {
				t.Errorf("%s: content differs", rel)
			}
			if a.Blocks*512 < a.Size/2 && b.Blocks*512 > a.Size/2 {
				t.Errorf("%s: a sparse source (%d blocks of %d bytes) became %d blocks", rel, a.Blocks, a.Size, b.Blocks)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("nothing compared")
	}
}
