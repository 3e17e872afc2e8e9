package service

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/transfer"
)

// Policy says what each certificate identity may do on this node
// (`serve --authz FILE`). It applies only to callers that presented a
// verified certificate; token and loopback callers are not identities.
//
//	[[allow]]
//	name = "ops"                     # named in denials (default: allow[N])
//	identities = ["client/ops"]      # node/ID, client/NAME, node/*, client/*, *
//	read = ["/data", "@*"]           # sources beneath these paths, or regions @NAME (@* all)
//	write = ["/data/incoming"]       # destinations beneath these paths or regions
//	manage_regions = false           # RegisterRegion and DeregisterRegion
//	peer = false                     # the Peer service: node identities only
//
// An identity may do what any rule naming it allows; one that no rule names
// may call nothing. Paths are lexical, beneath the export root: a symlink
// beneath the root that leads out of an allowed directory is followed.
type Policy struct {
	// Source names the policy in errors: its file, or "the default policy".
	Source string
	rules  []policyRule
	// dflt is the policy without a file: nodes may do everything, clients
	// all but the Peer service.
	dflt bool
}

type policyRule struct {
	Name          string   `toml:"name"`
	Identities    []string `toml:"identities"`
	Read          []string `toml:"read"`
	Write         []string `toml:"write"`
	ManageRegions bool     `toml:"manage_regions"`
	Peer          bool     `toml:"peer"`
}

// DefaultPolicy is the policy without --authz: a node identity may do
// everything, a client identity may call the Transfer service but not Peer.
var DefaultPolicy = &Policy{Source: "the default policy (no --authz)", dflt: true}

// maxPolicySize bounds a policy file: it is read whole at start.
const maxPolicySize = 1 << 20

// LoadPolicy reads a TOML policy file; any key it does not know is an error that names it.
func LoadPolicy(file string) (*Policy, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", file, err)
	}
	p.Source = "policy " + file
	return p, nil
}

// ParsePolicy parses a TOML policy (see Policy).
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > maxPolicySize {
		return nil, fmt.Errorf("%d bytes: a policy is at most %d", len(b), maxPolicySize)
	}
	var doc struct {
		Allow []policyRule `toml:"allow"`
	}
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(&doc)
	if err != nil {
		msg := err.Error() // the parser echoes input: cut it
		if len(msg) > 512 {
			msg = msg[:512] + "..."
		}
		return nil, errors.New(msg)
	}
	if keys := md.Undecoded(); len(keys) > 0 {
		return nil, fmt.Errorf("unknown key %s (known: allow, and in [[allow]]: name, identities, read, write, manage_regions, peer)", transfer.Quote(keys[0].String()))
	}
	if len(doc.Allow) == 0 {
		return nil, errors.New("no [[allow]] rules: with none, no identity may do anything (omit --authz for the default policy)")
	}
	p := &Policy{rules: doc.Allow}
	for i := range p.rules {
		r := &p.rules[i]
		if r.Name == "" {
			r.Name = fmt.Sprintf("allow[%d]", i)
		}
		where := fmt.Sprintf("rule %s", transfer.Quote(r.Name))
		if len(r.Identities) == 0 {
			return nil, fmt.Errorf("%s names no identities", where)
		}
		for _, pat := range r.Identities {
			kind, err := checkPattern(pat)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if r.Peer && kind == pki.KindClient {
				return nil, fmt.Errorf("%s: peer = true for %s: only node identities may call the Peer service", where, transfer.Quote(pat))
			}
		}
		for _, list := range []*[]string{&r.Read, &r.Write} {
			for j, s := range *list {
				c, err := cleanRule(s)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", where, err)
				}
				(*list)[j] = c
			}
		}
	}
	return p, nil
}

// checkPattern validates an identity pattern and returns the kind it is
// limited to (0 for "*").
func checkPattern(pat string) (pki.Kind, error) {
	if pat == "*" {
		return 0, nil
	}
	kind, name, ok := strings.Cut(pat, "/")
	k := map[string]pki.Kind{"node": pki.KindNode, "client": pki.KindClient}[kind]
	if !ok || k == 0 {
		return 0, fmt.Errorf("identity %s: want node/ID, client/NAME, node/*, client/* or *", transfer.Quote(pat))
	}
	if name != "*" {
		if err := pki.CheckName(kind+" name", name); err != nil {
			return 0, fmt.Errorf("identity %s: %w", transfer.Quote(pat), err)
		}
	}
	return k, nil
}

// cleanRule validates a read or write entry: an absolute path (cleaned) or @REGION / @*.
func cleanRule(s string) (string, error) {
	if name, ok := strings.CutPrefix(s, "@"); ok {
		if name != "" && !strings.ContainsAny(name, "/\x00") {
			return s, nil
		}
		return "", fmt.Errorf("region %s: want @NAME or @*", transfer.Quote(s))
	}
	if !strings.HasPrefix(s, "/") || strings.ContainsRune(s, 0) {
		return "", fmt.Errorf("path %s: want an absolute path beneath the export root (/ is all of it) or @REGION", transfer.Quote(s))
	}
	return path.Clean(s), nil
}

func matches(pat string, id pki.Identity) bool {
	if pat == "*" {
		return true
	}
	kind, name, _ := strings.Cut(pat, "/")
	return kind == id.Kind.String() && (name == "*" || strings.EqualFold(name, id.Name))
}

// rulesFor returns the rules naming id.
func (p *Policy) rulesFor(id pki.Identity) []*policyRule {
	var out []*policyRule
	for i := range p.rules {
		if slices.ContainsFunc(p.rules[i].Identities, func(pat string) bool { return matches(pat, id) }) {
			out = append(out, &p.rules[i])
		}
	}
	return out
}

// errDenied is a policy denial: PermissionDenied at the boundary.
var errDenied = transfer.ErrPermission

func (p *Policy) denied(id pki.Identity, what, why string) error {
	return fmt.Errorf("%w: %s may not %s: %s", errDenied, id, what, why)
}

func ruleNames(rs []*policyRule) string {
	var names []string
	for _, r := range rs {
		names = append(names, transfer.Quote(r.Name))
	}
	return strings.Join(names, ", ")
}

// Call reports whether id may call the service at all (a Transfer method
// that names no path or region).
func (p *Policy) Call(id pki.Identity) error {
	if p.dflt || len(p.rulesFor(id)) > 0 {
		return nil
	}
	return p.denied(id, "call this node", fmt.Sprintf("no rule of %s names it", p.Source))
}

// Peer reports whether id may call the Peer service.
func (p *Policy) Peer(id pki.Identity) error {
	if id.Kind != pki.KindNode {
		return p.denied(id, "call the Peer service", "only node identities may (a client asks a node to copy with the Transfer service; pushing a local file makes the CLI a source node and needs a node certificate)")
	}
	if p.dflt {
		return nil
	}
	rs := p.rulesFor(id)
	if slices.ContainsFunc(rs, func(r *policyRule) bool { return r.Peer }) {
		return nil
	}
	return p.denied(id, "call the Peer service", p.noRule(rs, "peer = true"))
}

// ManageRegions reports whether id may register and deregister regions.
func (p *Policy) ManageRegions(id pki.Identity) error {
	if p.dflt {
		return nil
	}
	rs := p.rulesFor(id)
	if slices.ContainsFunc(rs, func(r *policyRule) bool { return r.ManageRegions }) {
		return nil
	}
	return p.denied(id, "manage regions", p.noRule(rs, "manage_regions = true"))
}

func (p *Policy) noRule(rs []*policyRule, want string) string {
	if len(rs) == 0 {
		return fmt.Sprintf("no rule of %s names it", p.Source)
	}
	return fmt.Sprintf("no rule of %s naming it (%s) has %s", p.Source, ruleNames(rs), want)
}

// Read reports whether id may use target (a path beneath the root, or
// @REGION) as a source.
func (p *Policy) Read(id pki.Identity, target string) error {
	return p.access(id, "read", target, func(r *policyRule) []string { return r.Read })
}

// Write reports whether id may write target (a path beneath the root, or @REGION).
func (p *Policy) Write(id pki.Identity, target string) error {
	return p.access(id, "write", target, func(r *policyRule) []string { return r.Write })
}

func (p *Policy) access(id pki.Identity, verb, target string, list func(*policyRule) []string) error {
	if p.dflt {
		return nil
	}
	rs := p.rulesFor(id)
	var allowed []string
	for _, r := range rs {
		for _, prefix := range list(r) {
			if beneath(target, prefix) {
				return nil
			}
			allowed = append(allowed, fmt.Sprintf("%s (rule %s)", prefix, transfer.Quote(r.Name)))
		}
	}
	what := fmt.Sprintf("%s %s", verb, transfer.Quote(target))
	if len(allowed) == 0 {
		return p.denied(id, what, p.noRule(rs, verb+" entries"))
	}
	return p.denied(id, what, fmt.Sprintf("%s lets it %s only beneath %s", p.Source, verb, strings.Join(allowed, ", ")))
}

// beneath reports whether target (a path, or @REGION) is prefix or beneath it.
func beneath(target, prefix string) bool {
	if t, ok := strings.CutPrefix(target, "@"); ok {
		return prefix == "@*" || prefix == target && t != ""
	}
	if strings.HasPrefix(prefix, "@") {
		return false
	}
	t := path.Clean("/" + target)
	return prefix == "/" || t == prefix || strings.HasPrefix(t, prefix+"/")
}

// regionTarget is how a region appears to the policy: @NAME.
func regionTarget(name string) string { return "@" + name }
