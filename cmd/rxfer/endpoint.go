package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// DefaultPort is the control port assumed when an endpoint names none.
const DefaultPort = 7470

// endpoint is one side of `rxfer cp`: a local path, or a path beneath a
// remote node's export root.
type endpoint struct {
	Node string // host:port of the node's control API; empty for a local path
	Path string
}

func (e endpoint) Remote() bool { return e.Node != "" }

func (e endpoint) String() string {
	if !e.Remote() {
		return e.Path
	}
	return e.Node + ":" + e.Path
}

const endpointForms = "HOST:PORT:/path, HOST:/path (port 7470) or [IPv6]:PORT:/path"

// parseEndpoint reads SRC or DST of `rxfer cp`. Like scp, an argument is
// local unless a colon comes before any slash.
func parseEndpoint(s string) (endpoint, error) {
	if s == "" {
		return endpoint{}, fmt.Errorf("empty path: expected a local path or %s", endpointForms)
	}
	colon, slash := strings.IndexByte(s, ':'), strings.IndexByte(s, '/')
	if colon < 0 || (slash >= 0 && slash < colon && !strings.HasPrefix(s, "[")) {
		return endpoint{Path: s}, nil
	}
	bad := func(why string) (endpoint, error) {
		return endpoint{}, fmt.Errorf("invalid endpoint %q: %s; expected %s", s, why, endpointForms)
	}
	var host, rest string
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return bad("an IPv6 address needs the form [ADDR]:")
		}
		host, rest = s[1:end], s[end+2:]
		if net.ParseIP(host) == nil {
			return bad(fmt.Sprintf("%q is not an IP address", host))
		}
	} else {
		host, rest = s[:colon], s[colon+1:]
	}
	if host == "" {
		return bad("no host")
	}
	port := DefaultPort
	if p, path, ok := strings.Cut(rest, ":"); ok && !strings.Contains(p, "/") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad(fmt.Sprintf("port %q is not a number from 1 to 65535", p))
		}
		port, rest = n, path
	}
	if rest == "" {
		return bad("no path after the node")
	}
	return endpoint{Node: net.JoinHostPort(host, strconv.Itoa(port)), Path: rest}, nil
}

// parseNode reads a HOST:PORT (or [IPv6]:PORT) argument.
func parseNode(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", fmt.Errorf("invalid node address %q: expected HOST:PORT or [IPv6]:PORT", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("invalid node address %q: port must be a number from 1 to 65535", s)
	}
	return s, nil
}
