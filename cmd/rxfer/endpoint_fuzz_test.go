package main

import (
	"math"
	"net"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

// maxErrLen bounds a command-line error: the message and its forms, plus at most
// 256 bytes of the input, quoted (a byte quotes to at most 4 characters, and a
// message may name the input and a part of it).
const maxErrLen = 1024 + 2*4*256

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{
		"a:1:/x", "[::1]:2:/y", "local", "h:/p", ":::", "[", "]:", "./a:b", "n:7470:", "[fe80::1]:/x",
		"n:7470:@buf", "n:@buf:4K:1M", "[::1]:9:@b:12", "n:7470:@b:1:2:3", "n:1:@b:-1", "n:1:@b:+1K:0",
		"n:1:@b:4194304G:4194304G", "n:1:@b:9223372036854775807:1", "n:1:@b:4611686018427387904:4611686018427387903",
		"node2:99999:/x", "[nothost]:7470:/x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := parseEndpoint(s)
		if err != nil {
			if len(err.Error()) > maxErrLen {
				t.Fatalf("a %d-byte input gives a %d-byte error", len(s), len(err.Error()))
			}
			return
		}
		if !e.Remote() {
			if e.Path != s || e.Region != nil {
				t.Fatalf("local %q parsed as %+v", s, e)
			}
			return
		}
		host, port, err := net.SplitHostPort(e.Node)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			t.Fatalf("%q gives node %q", s, e.Node)
		}
		if (e.Path == "") == (e.Region == nil) {
			t.Fatalf("%q gives %+v: want exactly one of a path and a region", s, e)
		}
		if r := e.Region; r != nil {
			if r.Name == "" || strings.Contains(r.Name, ":") || r.Offset < 0 || r.Length < 0 || r.Offset > math.MaxInt64-r.Length {
				t.Fatalf("%q gives region window %+v", s, r)
			}
		}
		again, err := parseEndpoint(e.String())
		if err != nil || again.Node != e.Node || again.Path != e.Path || !proto.Equal(again.Region, e.Region) {
			t.Fatalf("%q parses as %+v, printed %q, which parses as %+v (%v)", s, e, e.String(), again, err)
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "4096", "64K", "16m", "2G", "4194304G", "4194305G", "4611686018427387904", "-1", "+5", "K", "", "1T", "0x10", "4611686018427387904:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseSize(s)
		if err != nil {
			if len(err.Error()) > maxErrLen {
				t.Fatalf("a %d-byte input gives a %d-byte error", len(s), len(err.Error()))
			}
			return
		}
		if v < 0 || v > 1<<62 {
			t.Fatalf("parseSize(%q) = %d, outside 0..2^62", s, v)
		}
		mult := map[byte]int64{'K': 1 << 10, 'k': 1 << 10, 'M': 1 << 20, 'm': 1 << 20, 'G': 1 << 30, 'g': 1 << 30}[s[len(s)-1]]
		if mult == 0 {
			if again, err := parseSize(strconv.FormatInt(v, 10)); err != nil || again != v {
				t.Fatalf("parseSize(%q) = %d, but its decimal form parses as %d, %v", s, v, again, err)
			}
			return
		}
		if n, err := parseSize(s[:len(s)-1]); err != nil || n*mult != v {
			t.Fatalf("parseSize(%q) = %d, but without its suffix it is %d, %v", s, v, n, err)
		}
	})
}

func FuzzParseNode(f *testing.F) {
	for _, s := range []string{"h:1", "[::1]:7470", "::1", "h:0", "h:65536", ":1", "h:+1", "[::1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		node, err := parseNode(s)
		if err != nil {
			if len(err.Error()) > maxErrLen {
				t.Fatalf("a %d-byte input gives a %d-byte error", len(s), len(err.Error()))
			}
			return
		}
		host, port, err := net.SplitHostPort(node)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			t.Fatalf("parseNode(%q) = %q", s, node)
		}
	})
}
