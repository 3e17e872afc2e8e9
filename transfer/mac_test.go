package transfer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rxfer/rxfer/internal/crc32c"
)

// forgeSameCRC changes b (the first 8 bytes, and the last 4 to compensate)
// so that its CRC32C stays the same: CRC32C is linear, so for a fixed length
// crc(a^d) = crc(a) ^ crc(d) ^ crc(0…0), and the 32 bits at the end can
// cancel any change before them. This is why a CRC is not a MAC.
func forgeSameCRC(b []byte) {
	n := len(b)
	zero := crc32c.Checksum(make([]byte, n))
	lin := func(d []byte) uint32 { return crc32c.Checksum(d) ^ zero }
	d := make([]byte, n)
	copy(d, "TAMPERED")
	target := lin(d)
	// Columns: the effect of each bit of the last 4 bytes.
	var cols [32]uint32
	for j := range 32 {
		e := make([]byte, n)
		e[n-4+j/8] = 1 << (j % 8)
		cols[j] = lin(e)
	}
	// Solve sum(x_j cols[j]) = target over GF(2) by elimination.
	type row struct{ v, x uint32 } // v: combination of columns' images, x: which bits
	var basis [32]row
	var have [32]bool
	for j := range 32 {
		r := row{cols[j], 1 << j}
		for bit := 31; bit >= 0; bit-- {
			if r.v>>bit&1 == 0 {
				continue
			}
			if !have[bit] {
				basis[bit], have[bit] = r, true
				break
			}
			r.v ^= basis[bit].v
			r.x ^= basis[bit].x
		}
	}
	var x uint32
	for bit := 31; bit >= 0; bit-- {
		if target>>bit&1 == 1 {
			target ^= basis[bit].v
			x ^= basis[bit].x
		}
	}
	for j := range 32 {
		if x>>j&1 == 1 {
			d[n-4+j/8] ^= 1 << (j % 8)
		}
	}
	for i := range b {
		b[i] ^= d[i]
	}
}

// tamperingProxy sits on the plaintext TCP data path and rewrites the payload
// of chunk 0, keeping its CRC32C: the headers and their tags pass untouched.
type tamperingProxy struct {
	ln       net.Listener
	target   string
	tampered atomic.Int32
	wg       sync.WaitGroup
}

func newTamperingProxy(t *testing.T, target string) *tamperingProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tamperingProxy{ln: ln, target: target}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.wg.Go(func() { io.Copy(c, s); c.Close() })
			p.wg.Go(func() { p.forward(c, s); s.(*net.TCPConn).CloseWrite() })
		}
	})
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

// forward copies a data connection from sender to receiver frame by frame
// (wire version 2: a 72-byte preamble, then 40-byte tagged headers, each
// followed by its payload).
func (p *tamperingProxy) forward(c, s net.Conn) {
	pre := make([]byte, 72)
	if _, err := io.ReadFull(c, pre); err != nil {
		return
	}
	s.Write(pre)
	hdr := make([]byte, 40)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		payload := make([]byte, binary.BigEndian.Uint32(hdr[16:20]))
		if _, err := io.ReadFull(c, payload); err != nil {
			return
		}
		if binary.BigEndian.Uint32(hdr[4:8]) == 0 {
			before := crc32c.Checksum(payload)
			forgeSameCRC(payload)
			if crc32c.Checksum(payload) == before {
				p.tampered.Add(1)
			}
		}
		s.Write(hdr)
		s.Write(payload)
	}
}

// redirectPeer sends the data connections of a push through a proxy.
type redirectPeer struct {
	Peer
	addr string
}

func (r redirectPeer) Prepare(ctx context.Context, req PrepareRequest) (PrepareResponse, error) {
	resp, err := r.Peer.Prepare(ctx, req)
	resp.TCP.Addr = r.addr
	return resp, err
}

// Someone on the data path who rewrites a chunk's bytes and keeps its CRC32C
// gets the file committed with plain CRC verification; with --verify mac the
// destination finds out before commit (ErrCorrupt, DataLoss at the API) and
// nothing is committed.
func TestVerifyMACDetectsTampering(t *testing.T) {
	p := newPair(t, testKnobs{}, func(c *Config) { c.RDMA.Disabled = true })
	want := writeRandom(t, filepath.Join(p.srcDir, "f"), 4<<16+123)
	proxy := newTamperingProxy(t, p.dst.cfg.DataAddr)
	peer := redirectPeer{p.dst.LocalPeer(), proxy.ln.Addr().String()}

	_, err := p.src.Push(t.Context(), PushRequest{SourcePath: "/f", DestPath: "/mac", Verify: VerifyMAC}, peer, nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered push with --verify mac: %v, want ErrCorrupt", err)
	}
	if proxy.tampered.Load() == 0 {
		t.Fatal("the proxy tampered with nothing: the test proves nothing")
	}
	if names := entries(t, p.dstDir); len(names) != 0 {
		t.Fatalf("destination holds %v after a failed MAC, want nothing", names)
	}

	// The same attack without the MAC: every CRC matches, the file commits
	// with other bytes. (This is the gap --verify mac closes.)
	if _, err := p.src.Push(t.Context(), PushRequest{SourcePath: "/f", DestPath: "/crc"}, peer, nil); err != nil {
		t.Fatalf("tampered push with CRC32C only: %v (the forgery should pass the CRC)", err)
	}
	got, _ := os.ReadFile(filepath.Join(p.dstDir, "crc"))
	if bytes.Equal(got, want) || len(got) != len(want) {
		t.Fatal("the CRC-only copy is intact: the proxy did not alter it")
	}

	// Untampered, the MAC passes and both ends say it was checked.
	info, err := p.src.Push(t.Context(), PushRequest{SourcePath: "/f", DestPath: "/ok", Verify: VerifyMAC}, p.dst.LocalPeer(), nil)
	if err != nil {
		t.Fatalf("push with --verify mac: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(p.dstDir, "ok")); !bytes.Equal(got, want) || info.Verify != "crc32c+mac" || info.DataEncryption != "off" {
		t.Fatalf("info %+v; destination intact: %v", info, bytes.Equal(got, want))
	}
}

func TestForgeSameCRC(t *testing.T) {
	for _, n := range []int{12, 100, 64 << 10} {
		b := bytes.Repeat([]byte{0xa5}, n)
		before := crc32c.Checksum(b)
		orig := bytes.Clone(b)
		forgeSameCRC(b)
		if bytes.Equal(b, orig) || crc32c.Checksum(b) != before {
			t.Fatalf("%d bytes: changed %v, CRC %08x → %08x", n, !bytes.Equal(b, orig), before, crc32c.Checksum(b))
		}
	}
}
