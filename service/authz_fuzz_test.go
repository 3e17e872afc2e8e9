package service

import (
	"strings"
	"testing"

	"github.com/rxfer/rxfer/internal/pki"
)

// FuzzParsePolicy: any policy file either fails with an error of bounded
// size or parses into rules whose decisions never panic; a parsed policy
// never lets a client identity call the Peer service.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(examplePolicy))
	f.Add([]byte("[[allow]]\nidentities=[\"*\"]\npeer=true\nread=[\"/\",\"@*\"]\nwrite=[\"/a/../b\"]"))
	f.Add([]byte("[[allow]]\nidentities=[\"client/*\"]\nread=[\"@\"]"))
	f.Add([]byte("a = 1\n[[allow]]\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := ParsePolicy(doc)
		if err != nil {
			if len(err.Error()) > 2048 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		p.Source = "fuzz"
		for _, id := range []pki.Identity{ops, nodeA, {Kind: pki.KindNode, Name: "*"}} {
			for _, target := range []string{"/", "/etc/passwd", "@x", "@*", "/data/../etc", "relative"} {
				p.Read(id, target)
				if err := p.Write(id, target); err != nil && !strings.Contains(err.Error(), id.Name) {
					t.Fatalf("a denial that does not name the identity: %v", err)
				}
			}
			p.Call(id)
			p.ManageRegions(id)
		}
		if err := p.Peer(ops); err == nil {
			t.Fatal("a client may call the Peer service")
		}
	})
}
