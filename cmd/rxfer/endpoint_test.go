package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in      string
		want    endpoint
		wantErr string
	}{
		{in: "n:7470:@buf", want: endpoint{Node: "n:7470", Region: &pb.RegionRef{Name: "buf"}}},
		{in: "n:@buf:4K:1M", want: endpoint{Node: "n:7470", Region: &pb.RegionRef{Name: "buf", Offset: 4096, Length: 1 << 20}}},
		{in: "[::1]:9:@b:12", want: endpoint{Node: "[::1]:9", Region: &pb.RegionRef{Name: "b", Offset: 12}}},
		{in: "n:7470:@", wantErr: "@NAME"},
		{in: "n:7470:@b:x", wantErr: "not a size"},
		{in: "n:7470:@b:1:2:3", wantErr: "@NAME"},
		{in: "n:7470:@b:4611686018427387904:4611686018427387904", wantErr: "out of range"},
		{in: "n:7470:@b:4294967296G:4294967296G", wantErr: "out of range"},
		{in: "n:7470:@b:4611686018427387904:4611686018427387903", want: endpoint{Node: "n:7470", Region: &pb.RegionRef{Name: "b", Offset: 1 << 62, Length: 1<<62 - 1}}},
		{in: "big.bin", want: endpoint{Path: "big.bin"}},
		{in: "/data/big.bin", want: endpoint{Path: "/data/big.bin"}},
		{in: "./a:b", want: endpoint{Path: "./a:b"}},
		{in: "node2:7470:/data/", want: endpoint{Node: "node2:7470", Path: "/data/"}},
		{in: "node2:/data/x", want: endpoint{Node: "node2:7470", Path: "/data/x"}},
		{in: "10.0.0.1:9000:x", want: endpoint{Node: "10.0.0.1:9000", Path: "x"}},
		{in: "[::1]:7470:/x", want: endpoint{Node: "[::1]:7470", Path: "/x"}},
		{in: "[fe80::1]:/x", want: endpoint{Node: "[fe80::1]:7470", Path: "/x"}},
		{in: ":7470:/x", wantErr: "no host"},
		{in: "node2:99999:/x", wantErr: "port"},
		{in: "node2:12ab:/x", wantErr: "port"},
		{in: "node2:7470:", wantErr: "no path"},
		{in: "[::1:7470:/x", wantErr: "[ADDR]"},
		{in: "[nothost]:7470:/x", wantErr: "not an IP"},
		{in: "", wantErr: "empty"},
	}
	for _, tt := range tests {
		got, err := parseEndpoint(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "HOST:PORT:/path") {
				t.Errorf("parseEndpoint(%q) error = %v, want one containing %q and the expected form", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Node != tt.want.Node || got.Path != tt.want.Path || !proto.Equal(got.Region, tt.want.Region) {
			t.Errorf("parseEndpoint(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}
