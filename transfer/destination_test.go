package transfer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// newDestination creates a destination "v" of 4 bytes in a fresh root,
// named or unnamed, and writes "good" into it.
func newDestination(t *testing.T, named, overwrite bool) (*Destination, string) {
	t.Helper()
	knobs.namedPartial = named
	t.Cleanup(func() { knobs.namedPartial = false })
	dir := t.TempDir()
	root, err := OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	d, err := root.CreateDestination("v", "", "id-1", 4, overwrite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.File().WriteAt([]byte("good"), 0); err != nil {
		t.Fatal(err)
	}
	return d, dir
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// Commit publishes the file it wrote, unnamed (O_TMPFILE) or named, with
// and without overwriting, and leaves no partial file (issue 12, finding 3).
func TestDestinationCommit(t *testing.T) {
	for _, named := range []bool{false, true} {
		for _, overwrite := range []bool{false, true} {
			d, dir := newDestination(t, named, overwrite)
			if overwrite {
				os.WriteFile(filepath.Join(dir, "v"), []byte("old contents"), 0o644)
			}
			// Before the commit: the old file if any, and a partial name if
			// named (asked for, or the file system has no O_TMPFILE, as the
			// testbed's overlayfs on Linux 6.1).
			want := 0
			for _, b := range []bool{d.named, overwrite} {
				if b {
					want++
				}
			}
			names := dirEntries(t, dir)
			if len(names) != want || slices.ContainsFunc(names, func(n string) bool { return n != "v" && !strings.HasPrefix(n, partialMarker) }) {
				t.Fatalf("named %v, overwrite %v: before commit the directory holds %q", named, overwrite, names)
			}
			if err := d.Commit(); err != nil {
				t.Fatalf("named %v, overwrite %v: %v", named, overwrite, err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "v")); string(got) != "good" {
				t.Fatalf("named %v, overwrite %v: v holds %q", named, overwrite, got)
			}
			if names := dirEntries(t, dir); !slices.Equal(names, []string{"v"}) {
				t.Fatalf("named %v, overwrite %v: after commit the directory holds %q", named, overwrite, names)
			}
		}
	}
}

// Without O_TMPFILE the partial file has a name, and whatever takes that
// name before Commit is not published: Commit fails with ErrCorrupt
// (DataLoss) and nothing appears at the final name.
func TestDestinationCommitRefusesSubstitutedPartial(t *testing.T) {
	for _, overwrite := range []bool{false, true} {
		d, dir := newDestination(t, true, overwrite)
		names := dirEntries(t, dir)
		if len(names) != 1 || !strings.HasPrefix(names[0], partialMarker) || len(names[0]) != 31 {
			t.Fatalf("want one short partial file, have %q", names)
		}
		evil := filepath.Join(dir, "evil")
		if err := os.WriteFile(evil, []byte("evil"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(evil, filepath.Join(dir, names[0])); err != nil {
			t.Fatal(err)
		}
		if err := d.Commit(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("overwrite %v: commit of a substituted partial file: %v, want %v", overwrite, err, ErrCorrupt)
		}
		d.Remove()
		if names := dirEntries(t, dir); len(names) != 0 {
			t.Fatalf("overwrite %v: after the failed commit the directory holds %q", overwrite, names)
		}
	}
}

// An unnamed partial file needs no name: a final name of NAME_MAX bytes
// works, and so it does with a named one (31 bytes, whatever the final name).
func TestDestinationLongName(t *testing.T) {
	t.Cleanup(func() { knobs.namedPartial = false })
	for _, named := range []bool{false, true} {
		knobs.namedPartial = named
		dir := t.TempDir()
		root, err := OpenRoot(dir)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.Repeat("x", 255)
		d, err := root.CreateDestination(name, "", strings.Repeat("i", 64), 1, false)
		if err != nil {
			t.Fatalf("named %v: %v", named, err)
		}
		d.File().WriteAt([]byte("z"), 0)
		if err := d.Commit(); err != nil {
			t.Fatalf("named %v: %v", named, err)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, name)); !bytes.Equal(got, []byte("z")) {
			t.Fatalf("named %v: the file holds %q", named, got)
		}
		root.Close()
	}
}
