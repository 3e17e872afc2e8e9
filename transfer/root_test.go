package transfer

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRootResolution(t *testing.T) {
	outside := t.TempDir()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o644))
	must(os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "sub", "file"), []byte("data"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "existing"), []byte("keep"), 0o644))
	must(os.Symlink(outside, filepath.Join(dir, "out-abs")))                         // absolute, leads out
	must(os.Symlink("../../"+filepath.Base(outside), filepath.Join(dir, "out-rel"))) // relative, leads out
	must(os.Symlink("sub/file", filepath.Join(dir, "in-link")))                      // stays inside
	r, err := OpenRoot(dir)
	must(err)
	t.Cleanup(func() { r.Close() })

	sources := []struct {
		path string
		want error
	}{
		{"/sub/file", nil},
		{"sub/file", nil},
		{"/in-link", ErrInvalid}, // a source is opened O_NOFOLLOW: name the file itself
		{"/missing", ErrNotFound},
		{"/sub", ErrInvalid},
		{"/../etc/passwd", ErrPathEscape},
		{"sub/../../x", ErrPathEscape},
		{"/out-abs/secret", ErrPathEscape},
		{"/out-rel/secret", ErrPathEscape},
		{"/existing/x", ErrNotFound},
	}
	for _, tt := range sources {
		f, _, err := r.OpenSource(tt.path)
		if f != nil {
			f.Close()
		}
		if !errors.Is(err, tt.want) && !(tt.want == nil && err == nil) {
			t.Errorf("OpenSource(%q) = %v, want %v", tt.path, err, tt.want)
		}
	}

	dests := []struct {
		path, srcName string
		overwrite     bool
		want          error
		final         string
	}{
		{"/new", "f", false, nil, "/new"},
		{"/sub/", "f", false, nil, "/sub/f"},
		{"/sub", "f", false, nil, "/sub/f"},
		{"/", "f", false, nil, "/f"},
		{"/existing", "f", false, ErrExists, ""},
		{"/existing", "f", true, nil, "/existing"},
		{"/nodir/x", "f", false, ErrNotFound, ""},
		{"/../x", "f", false, ErrPathEscape, ""},
		{"/out-abs/x", "f", false, ErrPathEscape, ""},
		{"/out-rel/", "f", false, ErrPathEscape, ""},
		{"/", "..", false, ErrInvalid, ""},
	}
	for _, tt := range dests {
		d, err := r.CreateDestination(tt.path, tt.srcName, "t1", 10, tt.overwrite)
		if tt.want != nil {
			if !errors.Is(err, tt.want) {
				t.Errorf("CreateDestination(%q) = %v, want %v", tt.path, err, tt.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("CreateDestination(%q): %v", tt.path, err)
			continue
		}
		if d.FinalPath != tt.final {
			t.Errorf("CreateDestination(%q) final path %q, want %q", tt.path, d.FinalPath, tt.final)
		}
		d.Remove()
	}
	if names := entries(t, outside); len(names) != 1 {
		t.Errorf("files appeared outside the root: %v", names)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "existing")); string(b) != "keep" {
		t.Errorf("existing file changed to %q", b)
	}
}

func TestCommitRefusesFileThatAppeared(t *testing.T) {
	dir := t.TempDir()
	r, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	d, err := r.CreateDestination("/x", "x", "t2", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("raced"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Commit(); !errors.Is(err, ErrExists) {
		t.Fatalf("Commit over a file created meanwhile = %v, want ErrExists", err)
	}
	d.Remove()
	if b, _ := os.ReadFile(filepath.Join(dir, "x")); string(b) != "raced" {
		t.Fatalf("the file that appeared was replaced: %q", b)
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Fatalf("directory holds %v, want only x", names)
	}
}
