package service

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/transfer"
)

var (
	ops   = pki.Identity{Kind: pki.KindClient, Name: "ops", TrustDomain: "lab"}
	guest = pki.Identity{Kind: pki.KindClient, Name: "guest", TrustDomain: "lab"}
	nodeA = pki.Identity{Kind: pki.KindNode, Name: "a", TrustDomain: "lab"}
)

const examplePolicy = `
[[allow]]
name = "nodes"
identities = ["node/*"]
read = ["/"]
write = ["/"]
manage_regions = true
peer = true

[[allow]]
name = "ops"
identities = ["client/ops"]
read = ["/data", "@*"]
write = ["/data/incoming/", "@scratch"]

[[allow]]
identities = ["client/guest"]
read = ["/pub"]
`

func TestPolicyDecisions(t *testing.T) {
	p, err := ParsePolicy([]byte(examplePolicy))
	if err != nil {
		t.Fatal(err)
	}
	p.Source = "policy test.toml"
	tests := []struct {
		name string
		err  error
		deny string // a denial contains this; "" means allowed
	}{
		{"node peer", p.Peer(nodeA), ""},
		{"node writes anywhere", p.Write(nodeA, "/etc/passwd"), ""},
		{"client peer", p.Peer(ops), "client ops (spiffe://lab/client/ops) may not call the Peer service: only node identities"},
		{"ops reads data", p.Read(ops, "/data/x"), ""},
		{"ops reads the data dir itself", p.Read(ops, "/data"), ""},
		{"ops reads a sibling with the prefix", p.Read(ops, "/database"), `may not read "/database": policy test.toml lets it read only beneath /data (rule "ops"), @* (rule "ops")`},
		{"ops escapes with ..", p.Read(ops, "/data/../etc/shadow"), `may not read "/data/../etc/shadow"`},
		{"ops reads any region", p.Read(ops, "@buf"), ""},
		{"ops writes incoming", p.Write(ops, "/data/incoming/f"), ""},
		{"ops writes /etc", p.Write(ops, "/etc/passwd"), `client ops (spiffe://lab/client/ops) may not write "/etc/passwd": policy test.toml lets it write only beneath /data/incoming (rule "ops"), @scratch (rule "ops")`},
		{"ops writes its region", p.Write(ops, "@scratch"), ""},
		{"ops writes another region", p.Write(ops, "@other"), `may not write "@other"`},
		{"ops manages regions", p.ManageRegions(ops), `may not manage regions: no rule of policy test.toml naming it ("ops") has manage_regions = true`},
		{"guest writes", p.Write(guest, "/pub/x"), `no rule of policy test.toml naming it ("allow[2]") has write entries`},
		{"guest calls", p.Call(guest), ""},
		{"stranger calls", p.Call(pki.Identity{Kind: pki.KindClient, Name: "eve", TrustDomain: "lab"}), "client eve (spiffe://lab/client/eve) may not call this node: no rule of policy test.toml names it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			switch {
			case tt.deny == "" && tt.err != nil:
				t.Fatalf("denied: %v", tt.err)
			case tt.deny != "" && (!errors.Is(tt.err, transfer.ErrPermission) || !strings.Contains(tt.err.Error(), tt.deny)):
				t.Fatalf("got %v; want a denial containing %q", tt.err, tt.deny)
			}
		})
	}
}

func TestDefaultPolicy(t *testing.T) {
	p := DefaultPolicy
	for _, err := range []error{p.Peer(nodeA), p.Write(nodeA, "/etc/x"), p.Call(ops), p.Read(ops, "/x"), p.Write(ops, "/x"), p.ManageRegions(ops)} {
		if err != nil {
			t.Errorf("default policy denied: %v", err)
		}
	}
	if err := p.Peer(ops); !errors.Is(err, transfer.ErrPermission) || !strings.Contains(err.Error(), "only node identities") {
		t.Errorf("default policy, a client calling Peer: %v", err)
	}
}

func TestParsePolicyRefuses(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"unknown top-level key", "peers = 1\n[[allow]]\nidentities=[\"*\"]", `unknown key "peers"`},
		{"unknown rule key", "[[allow]]\nidentities=[\"*\"]\nwrites=[\"/\"]", `unknown key "allow.writes"`},
		{"no rules", "", "no [[allow]] rules"},
		{"no identities", "[[allow]]\nread=[\"/\"]", `rule "allow[0]" names no identities`},
		{"bad identity", "[[allow]]\nidentities=[\"admin/x\"]", `identity "admin/x": want node/ID`},
		{"relative path", "[[allow]]\nidentities=[\"*\"]\nread=[\"data\"]", `path "data": want an absolute path`},
		{"empty region", "[[allow]]\nidentities=[\"*\"]\nwrite=[\"@\"]", `region "@": want @NAME`},
		{"peer for a client", "[[allow]]\nname=\"x\"\nidentities=[\"client/ops\"]\npeer=true", `rule "x": peer = true for "client/ops": only node identities`},
		{"wrong type", "[[allow]]\nidentities=\"*\"", "identities"},
		{"not TOML", "[[allow", "expected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v; want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadPolicyNamesFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "authz.toml")
	if err := os.WriteFile(f, []byte("[[allow]]\nidentities=[\"*\"]\nbogus=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPolicy(f); err == nil || !strings.Contains(err.Error(), "policy "+f+`: unknown key "allow.bogus"`) {
		t.Fatalf("got %v", err)
	}
}
