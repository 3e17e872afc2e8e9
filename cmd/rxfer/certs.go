package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/rxfer/rxfer/internal/pki"
)

const certsUsage = `usage: rxfer certs init --dir DIR --trust-domain TD --nodes ID[=HOST],... [--clients NAME,...] [--valid-for 8760h] [--force]
Makes a CA (DIR/ca.crt, ca.key) and a certificate and key per node
(node-ID.crt, .key: spiffe://TD/node/ID and DNS name ID, plus each HOST, a
DNS name or IP address the node is reached at; name a node again to add a
host) and per client (client-NAME.crt, .key: spiffe://TD/client/NAME).`

func cmdCerts(args []string) error {
	if len(args) == 0 || args[0] != "init" {
		return usagef("%s", certsUsage)
	}
	fs := flag.NewFlagSet("certs init", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory to write the CA, certificates and keys to (required)")
	td := fs.String("trust-domain", "", "SPIFFE trust domain of the identities, e.g. lab.example (required)")
	nodes := fs.String("nodes", "", "comma-separated node IDs, each optionally =HOST (a DNS name or IP it is reached at)")
	clients := fs.String("clients", "", "comma-separated client names")
	validFor := fs.Duration("valid-for", pki.DefaultValidity, "validity of the CA and every certificate")
	force := fs.Bool("force", false, "replace existing files (a new CA: every old certificate stops being trusted)")
	fs.Usage = func() { fmt.Fprintln(fs.Output(), certsUsage); fs.PrintDefaults() }
	if err := fs.Parse(args[1:]); err != nil {
		return usagef("%v", err)
	}
	if *dir == "" || *td == "" || fs.NArg() > 0 || *nodes == "" && *clients == "" {
		return usagef("%s", certsUsage)
	}
	if *validFor <= 0 {
		return usagef("--valid-for %v: want a positive duration", *validFor)
	}
	opt := pki.InitOptions{Dir: *dir, TrustDomain: *td, Validity: pki.ValidFor(*validFor), Force: *force}
	var err error
	if opt.Nodes, err = parseNodeList(*nodes); err != nil {
		return usageError{err.Error()}
	}
	for _, c := range splitList(*clients) {
		if err := pki.CheckName("client name", c); err != nil {
			return usageError{err.Error()}
		}
		opt.Clients = append(opt.Clients, c)
	}
	files, err := pki.Init(opt)
	if errors.Is(err, pki.ErrExists) {
		return usageError{err.Error()}
	}
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Println(f)
	}
	fmt.Printf("valid until %s; keys are mode 0600\n", opt.Validity.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseNodeList parses "a=10.0.0.1,b,a=a.lan": a node named again gains a host.
func parseNodeList(s string) ([]pki.Node, error) {
	var out []pki.Node
	index := map[string]int{}
	for _, f := range splitList(s) {
		id, host, hasHost := strings.Cut(f, "=")
		if err := pki.CheckName("node ID", id); err != nil {
			return nil, err
		}
		i, ok := index[id]
		if !ok {
			i = len(out)
			index[id] = i
			out = append(out, pki.Node{ID: id})
		}
		if hasHost {
			if host == "" {
				return nil, fmt.Errorf("node %s: empty host after '='", id)
			}
			out[i].Hosts = append(out[i].Hosts, host)
		}
	}
	return out, nil
}
