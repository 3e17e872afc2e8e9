package transfer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// An expecting node takes exactly the one transfer it was told of; every
// other Prepare is refused before anything is created, and reported.
func TestExpectationAdmitsOneTransfer(t *testing.T) {
	push := func(p *pair, req PushRequest) error {
		_, err := p.src.Push(context.Background(), req, p.dst.LocalPeer(), nil)
		return err
	}
	cases := []struct {
		name    string
		expect  *Expectation
		mkdir   string        // a directory to create in the destination root first
		reqs    []PushRequest // pushed in turn; all but the last must succeed
		entries []string      // the destination root afterwards
	}{
		{"the expected file", &Expectation{DestPath: "out", MaxSize: 1 << 20},
			"", []PushRequest{{SourcePath: "f", DestPath: "out"}}, []string{"out"}},
		{"another path", &Expectation{DestPath: "out", MaxSize: 1 << 20},
			"", []PushRequest{{SourcePath: "f", DestPath: "other"}}, nil},
		{"overwrite not expected", &Expectation{DestPath: "out", MaxSize: 1 << 20},
			"", []PushRequest{{SourcePath: "f", DestPath: "out", Overwrite: true}}, nil},
		{"overwrite expected but not asked", &Expectation{DestPath: "out", Overwrite: true, MaxSize: 1 << 20},
			"", []PushRequest{{SourcePath: "f", DestPath: "out"}}, nil},
		{"larger than expected", &Expectation{DestPath: "out", MaxSize: 1000},
			"", []PushRequest{{SourcePath: "f", DestPath: "out"}}, nil},
		{"a region", &Expectation{DestPath: "out", MaxSize: 1 << 20},
			"", []PushRequest{{SourcePath: "f", DestRegion: &RegionRef{Name: "r"}}}, nil},
		{"a second transfer", &Expectation{DestPath: "out", Overwrite: true, MaxSize: 1 << 20},
			"", []PushRequest{{SourcePath: "f", DestPath: "out", Overwrite: true}, {SourcePath: "f", DestPath: "out", Overwrite: true}}, []string{"out"}},
		// The expected name turned out to be a directory: the source's
		// name must not pick a file inside it.
		{"a directory", &Expectation{DestPath: "d", MaxSize: 1 << 20},
			"d", []PushRequest{{SourcePath: "f", DestPath: "d"}}, []string{"d"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var violations []error
			tc.expect.Violated = func(err error) { violations = append(violations, err) }
			p := newPair(t, testKnobs{}, func(c *Config) { c.Expect = tc.expect })
			writeRandom(t, filepath.Join(p.srcDir, "f"), 4096)
			if tc.mkdir != "" {
				if err := os.Mkdir(filepath.Join(p.dstDir, tc.mkdir), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			for i, req := range tc.reqs {
				if err = push(p, req); err != nil && i < len(tc.reqs)-1 {
					t.Fatalf("push %d: %v", i, err)
				}
			}
			wantOK := tc.name == "the expected file"
			if wantOK != (err == nil) || (!wantOK && tc.mkdir == "" && (!errors.Is(err, ErrUnexpected) || len(violations) != 1)) {
				t.Errorf("last push: %v, violations %v", err, violations)
			}
			if got := entries(t, p.dstDir); !slices.Equal(got, tc.entries) {
				t.Errorf("destination root holds %v, want %v", got, tc.entries)
			}
			if tc.mkdir != "" {
				if got := entries(t, filepath.Join(p.dstDir, tc.mkdir)); len(got) != 0 {
					t.Errorf("the directory holds %v, want nothing", got)
				}
			}
		})
	}
}
