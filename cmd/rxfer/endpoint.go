package main

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

// DefaultPort is the control port assumed when an endpoint names none.
const DefaultPort = 7470

// endpoint is one side of `rxfer cp`: a local path, or a path beneath a
// remote node's export root.
type endpoint struct {
	Node   string // host:port of the node's control API; empty for a local path
	Path   string
	Region *pb.RegionRef // a window of a region on Node instead of Path
}

func (e endpoint) Remote() bool { return e.Node != "" }

func (e endpoint) String() string {
	switch {
	case !e.Remote():
		return e.Path
	case e.Region != nil:
		return fmt.Sprintf("%s:@%s:%d:%d", e.Node, e.Region.Name, e.Region.Offset, e.Region.Length)
	}
	return e.Node + ":" + e.Path
}

const endpointForms = "HOST:PORT:/path, HOST:/path (port 7470), [IPv6]:PORT:/path, or a region HOST:PORT:@NAME[:OFFSET[:LENGTH]]"

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
		return endpoint{}, fmt.Errorf("invalid endpoint %s: %s; expected %s", transfer.Quote(s), why, endpointForms)
	}
	var host, rest string
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]:")
		if end < 0 {
			return bad("an IPv6 address needs the form [ADDR]:")
		}
		host, rest = s[1:end], s[end+2:]
		if net.ParseIP(host) == nil {
			return bad(fmt.Sprintf("%s is not an IP address", transfer.Quote(host)))
		}
	} else {
		host, rest = s[:colon], s[colon+1:]
	}
	if host == "" {
		return bad("no host")
	}
	// net.JoinHostPort brackets only hosts with a colon: "a]b:7470" could not be split again.
	if strings.ContainsAny(host, "[]") {
		return bad(fmt.Sprintf("host %s: brackets go only around an IPv6 address", transfer.Quote(host)))
	}
	port := DefaultPort
	if p, path, ok := strings.Cut(rest, ":"); ok && !strings.Contains(p, "/") && !strings.HasPrefix(p, "@") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad(fmt.Sprintf("port %s is not a number from 1 to 65535", transfer.Quote(p)))
		}
		port, rest = n, path
	}
	if rest == "" {
		return bad("no path after the node")
	}
	e := endpoint{Node: net.JoinHostPort(host, strconv.Itoa(port)), Path: rest}
	if strings.HasPrefix(rest, "@") {
		ref, err := parseRegion(rest[1:])
		if err != nil {
			return bad(err.Error())
		}
		e.Region, e.Path = ref, ""
	}
	return e, nil
}

// parseRegion reads NAME[:OFFSET[:LENGTH]]; sizes take K, M, G suffixes.
func parseRegion(s string) (*pb.RegionRef, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 3 || parts[0] == "" {
		return nil, fmt.Errorf("region %s: want @NAME, @NAME:OFFSET or @NAME:OFFSET:LENGTH", transfer.Quote(s))
	}
	ref := &pb.RegionRef{Name: parts[0]}
	var err error
	if len(parts) > 1 {
		if ref.Offset, err = parseSize(parts[1]); err != nil {
			return nil, fmt.Errorf("region offset: %w", err)
		}
	}
	if len(parts) > 2 {
		if ref.Length, err = parseSize(parts[2]); err != nil {
			return nil, fmt.Errorf("region length: %w", err)
		}
	}
	// Each is at most 2^62, so only the sum can overflow; the node would refuse
	// it too, but the user's mistake is clearer here.
	if ref.Offset > math.MaxInt64-ref.Length {
		return nil, fmt.Errorf("region window out of range: offset %d + length %d ends past the largest offset, %d", ref.Offset, ref.Length, int64(math.MaxInt64))
	}
	return ref, nil
}

// parseSize reads a byte count such as 4096, 64K, 16M or 2G (binary units).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K', 'k':
			mult, s = 1<<10, s[:n-1]
		case 'M', 'm':
			mult, s = 1<<20, s[:n-1]
		case 'G', 'g':
			mult, s = 1<<30, s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%s is not a size (bytes, or with K, M or G)", transfer.Quote(s))
	}
	return v * mult, nil
}

// parseNode reads a HOST:PORT (or [IPv6]:PORT) argument.
func parseNode(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", fmt.Errorf("invalid node address %s: expected HOST:PORT or [IPv6]:PORT", transfer.Quote(s))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("invalid node address %s: port must be a number from 1 to 65535", transfer.Quote(s))
	}
	return s, nil
}
