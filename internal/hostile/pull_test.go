package hostile

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// Finding 1: `rxfer cp SRC:/x ./local` makes the CLI a one-copy receiving
// node and hands its Peer API and token to the source. A source that
// answers the Copy by preparing anything but the requested file must get
// PermissionDenied with nothing written, and the CLI must fail naming it.
func TestPullAcceptsOnlyTheRequestedFile(t *testing.T) {
	bin := RxferBinary(t)
	key := []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIattacker attacker@evil\n")
	honest := bytes.Repeat([]byte("the report "), 300)
	cases := []struct {
		name   string
		force  bool
		src    string // the source the user names, beneath the fake node
		dst    string // the local destination, beneath the test's directory
		mine   []byte // an existing local file at dst, if not nil
		attack func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) error
		// want is the local directory afterwards: name → content (.ssh is always there, empty).
		want map[string][]byte
	}{{
		name: "another path", src: "/report.pdf", dst: "report.pdf",
		attack: func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) error {
			prep := PrepareFor(req, key)
			prep.DestPath, prep.Overwrite = "/.ssh/authorized_keys", true
			return PushBytes(ctx, victim, prep, key)
		},
	}, {
		name: "its own name into another directory", src: "/report.pdf", dst: "./",
		attack: func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) error {
			prep := PrepareFor(req, key)
			prep.DestPath, prep.SourceName = "/.ssh", "authorized_keys"
			return PushBytes(ctx, victim, prep, key)
		},
	}, {
		name: "overwrite the user did not ask for", src: "/report.pdf", dst: "report.pdf", mine: []byte("my report\n"),
		attack: func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) error {
			prep := PrepareFor(req, key)
			prep.Overwrite = true
			return PushBytes(ctx, victim, prep, key)
		},
		want: map[string][]byte{"report.pdf": []byte("my report\n")},
	}, {
		name: "more bytes than the window", src: "@buf:0:4096", dst: "out.bin",
		attack: func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) error {
			big := bytes.Repeat(key, 8192/len(key)+1)
			return PushBytes(ctx, victim, PrepareFor(req, big), big)
		},
	}, {
		name: "more bytes than the disk has", src: "/report.pdf", dst: "report.pdf",
		attack: func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) error {
			prep := PrepareFor(req, key)
			prep.Size, prep.ChunkSize = 1<<50, 1<<30 // 1 PiB
			return PushBytes(ctx, victim, prep, key)
		},
	}, {
		name: "a region instead of the file", src: "/report.pdf", dst: "report.pdf",
		attack: func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) error {
			prep := PrepareFor(req, key)
			prep.DestPath, prep.DestRegion = "", &pb.RegionRef{Name: "anything", Length: int64(len(key))}
			return PushBytes(ctx, victim, prep, key)
		},
	}, {
		name: "a second prepare", force: true, src: "/report.pdf", dst: "report.pdf",
		attack: func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) error {
			if err := PushBytes(ctx, victim, PrepareFor(req, honest), honest); err != nil {
				return err
			}
			return PushBytes(ctx, victim, PrepareFor(req, key), key) // same file, same flags, new transfer
		},
		want: map[string][]byte{"report.pdf": honest},
	}, {
		name: "success without a byte", src: "/report.pdf", dst: "report.pdf",
		attack: func(context.Context, pb.PeerClient, *pb.CopyRequest) error { return nil },
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			local := t.TempDir()
			if err := os.Mkdir(filepath.Join(local, ".ssh"), 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.mine != nil {
				if err := os.WriteFile(filepath.Join(local, tc.dst), tc.mine, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			attacked := make(chan error, 1)
			src := StartFakeSource(t, func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) {
				attacked <- tc.attack(ctx, victim, req)
			})
			args := []string{"cp"}
			if tc.force {
				args = append(args, "--force")
			}
			r := RunRxfer(t, bin, append(args, src.Addr+":"+tc.src, filepath.Join(local, tc.dst))...)
			select {
			case err := <-attacked:
				t.Logf("the attack ended with: %v", err)
			case <-time.After(cliTimeout):
				t.Fatal("the attack did not end after the CLI exited")
			}
			if r.Code != 1 || !strings.Contains(r.Stderr, src.Addr) {
				t.Errorf("want exit status 1 and an error naming the source %s\n%s", src.Addr, r)
			}
			if tc.name != "success without a byte" && !strings.Contains(r.Stderr, "PermissionDenied") {
				t.Errorf("want PermissionDenied\n%s", r)
			}
			wantDir(t, local, tc.want)
		})
	}
}

// TestPullFromAnHonestSource is the control: the same fake source behaving
// (the Prepare an honest source sends) gets its file written.
func TestPullFromAnHonestSource(t *testing.T) {
	bin := RxferBinary(t)
	data := bytes.Repeat([]byte("honest bytes "), 1000)
	for _, dst := range []string{"copy.bin", "./"} {
		local := t.TempDir()
		attacked := make(chan error, 1)
		src := StartFakeSource(t, func(ctx context.Context, victim pb.PeerClient, req *pb.CopyRequest) {
			attacked <- PushBytes(ctx, victim, PrepareFor(req, data), data)
		})
		if r := RunRxfer(t, bin, "cp", src.Addr+":/dir/data.bin", filepath.Join(local, dst)); r.Code != 0 {
			t.Errorf("pull into %s failed:\n%s", dst, r)
		}
		if err := <-attacked; err != nil {
			t.Errorf("honest push into %s: %v", dst, err)
		}
		name := dst
		if dst == "./" {
			name = "data.bin"
		}
		wantDir(t, local, map[string][]byte{name: data})
	}
}

// wantDir fails t unless dir holds exactly want's files (and an empty .ssh, if it exists).
func wantDir(t *testing.T, dir string, want map[string][]byte) {
	t.Helper()
	var got []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != dir && !(d.IsDir() && d.Name() == ".ssh" && filepath.Dir(p) == dir) {
			got = append(got, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	var names []string
	for name, content := range want {
		names = append(names, name)
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || !bytes.Equal(b, content) {
			t.Errorf("%s: %.80q, %v; want %.80q", name, b, err, content)
		}
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Errorf("directory holds %q, want %q", got, names)
	}
}
