package rdma

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/verbs"
)

func TestWireRoundTrip(t *testing.T) {
	b := make([]byte, msgLen)
	cm := chunkMsg{Slot: 7, Chunk: chunk.Chunk{Index: 3, Offset: 1 << 40, Length: 1 << 20, CRC: 0xdeadbeef}}
	putChunkMsg(b, cm)
	if got, err := parseChunkMsg(b); err != nil || got != cm {
		t.Errorf("chunk message: %+v, %v; want %+v", got, err, cm)
	}
	if _, err := parseAckMsg(b); !errors.Is(err, errBadMessage) {
		t.Errorf("a chunk message parsed as an ack: %v", err)
	}
	am := ackMsg{Slot: 5, Index: 9, Status: chunk.StatusChecksum}
	putAckMsg(b, am)
	if got, err := parseAckMsg(b); err != nil || got != am {
		t.Errorf("ack: %+v, %v; want %+v", got, err, am)
	}
	if _, err := parseChunkMsg(b[:msgLen-1]); !errors.Is(err, errBadMessage) {
		t.Errorf("short message: %v", err)
	}
	putChunkMsg(b, chunkMsg{Chunk: chunk.Chunk{Offset: -1}})
	if _, err := parseChunkMsg(b); !errors.Is(err, errBadMessage) {
		t.Errorf("negative offset: %v", err)
	}
}

func gid(s string, index int) gidEntry {
	a := netip.MustParseAddr(s)
	return gidEntry{GIDEntry: verbs.GIDEntry{Index: index, GID: a.As16(), Type: verbs.GIDTypeRoCEv2}, addr: a.Unmap()}
}

func TestChooseGID(t *testing.T) {
	gids := []gidEntry{
		gid("fe80::5054:ff:fe77:1", 0),
		gid("::ffff:10.77.0.1", 1),
		gid("::ffff:192.168.1.5", 2),
		gid("2001:db8::5", 3),
	}
	gids[1].addr, gids[2].addr = netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("192.168.1.5")
	addrs := []netip.Prefix{netip.MustParsePrefix("10.77.0.1/24"), netip.MustParsePrefix("192.168.1.5/24"), netip.MustParsePrefix("2001:db8::5/64")}
	tests := []struct {
		peer string
		want int
	}{
		{"", 1}, // any: IPv4 first
		{"10.77.0.2", 1},
		{"192.168.1.9", 2},
		{"10.77.0.1", 1}, // loopback onto ourselves
		{"172.16.0.1", 1},
		{"2001:db8::9", 3},
		{"fe80::1", 3}, // global preferred over link-local without a matching subnet
	}
	for _, tt := range tests {
		var peer netip.Addr
		if tt.peer != "" {
			peer = netip.MustParseAddr(tt.peer)
		}
		g, score := chooseGID(gids, addrs, peer)
		if score < 0 || g.Index != tt.want {
			t.Errorf("peer %q: index %d (score %d); want %d", tt.peer, g.Index, score, tt.want)
		}
	}
	if _, score := chooseGID(gids[1:3], addrs, netip.MustParseAddr("2001:db8::9")); score >= 0 {
		t.Error("an IPv6 peer got an IPv4 GID")
	}
}

func TestConnectConfigMismatch(t *testing.T) {
	e := &endpoint{sel: &selection{port: 1, mtu: verbs.MTU4096}, access: verbs.AccessLocalWrite,
		info: EndpointInfo{QPN: 0x11, PSN: 0x123456, GID: netip.MustParseAddr("::ffff:10.77.0.1").As16(), GIDIndex: 1, MTU: 4096}}
	good := EndpointInfo{QPN: 0x12, PSN: 0x654321, GID: netip.MustParseAddr("::ffff:10.77.0.2").As16(), GIDIndex: 1, MTU: 1024}
	cfg, peer, err := e.connectConfig(good)
	// A retry count of 7 means "forever" to rxe: a vanished peer would never fail.
	if err != nil || cfg.MTU != verbs.MTU1024 || peer.MTU != verbs.MTU1024 || peer.QPN != 0x12 || cfg.PSN != 0x123456 || cfg.GIDIndex != 1 || cfg.Timeout == 0 || cfg.RetryCount == 0 || cfg.RetryCount >= 7 {
		t.Errorf("connectConfig: %+v, %+v, %v", cfg, peer, err)
	}
	for name, tc := range map[string]struct {
		mod  func(*EndpointInfo)
		want string
	}{
		"v6":  {func(i *EndpointInfo) { i.GID = netip.MustParseAddr("2001:db8::1").As16() }, "GID family"},
		"mtu": {func(i *EndpointInfo) { i.MTU = 1500 }, "MTU"},
		"qpn": {func(i *EndpointInfo) { i.QPN = 0 }, "QPN"},
		"gid": {func(i *EndpointInfo) { i.GID = [16]byte{} }, "GID"},
	} {
		info := good
		tc.mod(&info)
		_, _, err := e.connectConfig(info)
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want ErrMismatch naming %q", name, err, tc.want)
		}
	}
}

func TestRemoteBufferHidesRKey(t *testing.T) {
	b := RemoteBuffer{Addr: 0x1000, RKey: 0xabcdef, Len: 4096}
	for _, s := range []string{b.String(), b.GoString()} {
		if strings.Contains(strings.ToLower(s), "abcdef") || strings.Contains(s, "11259375") {
			t.Errorf("%q shows the rkey", s)
		}
	}
}

// A source mapping whose file shrank under it faults; copyMapped turns
// that into an error instead of a crash.
func TestCopyMappedFault(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "src")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := os.Getpagesize()
	if err := f.Truncate(int64(2 * page)); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, 2*page, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	dst := make([]byte, 2*page)
	if err := copyMapped(dst, m); err != nil {
		t.Fatalf("copy of an intact mapping: %v", err)
	}
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if err := copyMapped(dst, m); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("copy from a truncated file's mapping: %v, want an error wrapping io.ErrUnexpectedEOF", err)
	}
}
