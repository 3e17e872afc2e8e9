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
		{"one", []Extent{{File: f, Offset: 7, Length: 100}}, ""},
		{"tail, whole, head", []Extent{{File: f, Offset: 90, Length: 10}, {File: f, Offset: 0, Length: 50}, {File: f, Offset: 0, Length: 40}}, ""},
		{"zero-length ones, one without a file", []Extent{{File: f, Offset: 5, Length: 0}, {File: f, Offset: 0, Length: 100}, {File: nil, Offset: 0, Length: 0}}, ""},
		{"short", []Extent{{File: f, Offset: 0, Length: 60}, {File: f, Offset: 0, Length: 39}}, "add up to 99 bytes, not its 100"},
		{"long", []Extent{{File: f, Offset: 0, Length: 60}, {File: f, Offset: 0, Length: 41}}, "more than its 100 bytes (at extent 1 of 2)"},
		{"none", nil, "add up to 0 bytes, not its 100"},
		{"no file", []Extent{{File: nil, Offset: 0, Length: 100}}, "no file"},
		{"negative length", []Extent{{File: f, Offset: 0, Length: 100}, {File: f, Offset: 0, Length: -1}}, "negative"},
		{"negative offset", []Extent{{File: f, Offset: -1, Length: 100}}, "negative"},
		{"offset overflows", []Extent{{File: f, Offset: math.MaxInt64 - 10, Length: 100}}, "largest file offset"},
		{"lengths overflow", []Extent{{File: f, Offset: 0, Length: 50}, {File: f, Offset: 0, Length: math.MaxInt64}, {File: f, Offset: 0, Length: math.MaxInt64}}, "more than"},
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

// A Layout may answer with bytes in memory; a Sink may not (its extents are
// written to), and Data must be exactly the extent's length.
func TestCheckLayoutData(t *testing.T) {
	f := os.Stdin
	c := Chunk{Index: 4, Length: 10}
	mixed := []Extent{{Data: []byte("abcd"), Length: 4}, {File: f, Offset: 0, Length: 6}}
	if err := CheckLayout(c, mixed); err != nil {
		t.Errorf("Data then a file: %v", err)
	}
	if err := CheckExtents(c, mixed); err == nil || !strings.Contains(err.Error(), "a sink's extents must be files") {
		t.Errorf("a sink's Data extent: %v, want refused", err)
	}
	for name, exts := range map[string][]Extent{
		"Data shorter than Length": {{Data: []byte("abc"), Length: 4}, {File: f, Length: 6}},
		"Data longer than Length":  {{Data: []byte("abcde"), Length: 4}, {File: f, Length: 6}},
		"Data past the chunk":      {{Data: make([]byte, 11), Length: 11}},
	} {
		if err := CheckLayout(c, exts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
