package chunk

import (
	"math"
	"os"
	"strings"
	"testing"
)

func TestCheckExtents(t *testing.T) {
	f := os.Stdin // any open file: CheckExtents never touches it
	c := Chunk{Index: 3, Length: 100}
	for _, tc := range []struct {
		name string
		exts []Extent
		want string // "" = accepted; else a part of the error
	}{
		{"one", []Extent{{f, 7, 100}}, ""},
		{"tail, whole, head", []Extent{{f, 90, 10}, {f, 0, 50}, {f, 0, 40}}, ""},
		{"zero-length ones, one without a file", []Extent{{f, 5, 0}, {f, 0, 100}, {nil, 0, 0}}, ""},
		{"short", []Extent{{f, 0, 60}, {f, 0, 39}}, "add up to 99 bytes, not its 100"},
		{"long", []Extent{{f, 0, 60}, {f, 0, 41}}, "more than its 100 bytes (at extent 1 of 2)"},
		{"none", nil, "add up to 0 bytes, not its 100"},
		{"no file", []Extent{{nil, 0, 100}}, "no file"},
		{"negative length", []Extent{{f, 0, 100}, {f, 0, -1}}, "negative"},
		{"negative offset", []Extent{{f, -1, 100}}, "negative"},
		{"offset overflows", []Extent{{f, math.MaxInt64 - 10, 100}}, "largest file offset"},
		{"lengths overflow", []Extent{{f, 0, 50}, {f, 0, math.MaxInt64}, {f, 0, math.MaxInt64}}, "more than"},
	} {
		err := CheckExtents(c, tc.exts)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if err := CheckExtents(Chunk{}, nil); err != nil {
		t.Errorf("an empty chunk with no extents: %v", err)
	}
}
