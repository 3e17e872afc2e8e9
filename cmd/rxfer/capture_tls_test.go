package main

// The whole wire of an mTLS cluster with a bearer token too: a capture of
// every TCP packet in the destination's namespace during a copy shows no
// bearer token (the control plane is TLS), and with --data-encryption on
// (auto across the network) no marker planted in the file and no data
// preamble (the data token's id travels in it). A copy with encryption off,
// captured the same way, shows the marker and the preamble: the capture does
// see plaintext.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

func TestNetnsCaptureMTLS(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("capture test skipped: tcpdump is not installed (make deps installs it)")
	}
	secret := make([]byte, 24)
	rand.Read(secret)
	bearer := []byte("rxfer-bearer-" + hex.EncodeToString(secret))
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, append(bearer, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	// HTTP/2 sends the header value Huffman-coded (HPACK) or as is.
	onWire := func(pcap []byte) bool {
		v := "Bearer " + string(bearer)
		return bytes.Contains(pcap, []byte(v)) || bytes.Contains(pcap, hpack.AppendHuffmanString(nil, v))
	}
	c := newTLSCluster(t, "--token-file", tokFile)
	// node2 again, on other ports, with plaintext data connections.
	plain := startDaemon(t, daemonConfig{NS: c.NS2, ID: "node2", Listen: c.IP2 + ":7480", DataListen: c.IP2 + ":7481",
		Extra: append(tlsServeArgs(c.dir, "node2"), "--token-file", tokFile, "--data-encryption", "off")})

	marker := []byte(fmt.Sprintf("RXFER-PLANTED-MARKER-%d-%x", os.Getpid(), secret[:4]))
	data := make([]byte, 4<<20)
	rand.Read(data)
	for i := 0; i+len(marker) <= len(data); i += 32 << 10 {
		copy(data[i:], marker)
	}
	writeFile(t, c.n1.Path("marked.bin"), data)
	// A data connection starts with its preamble: magic "RXFD", then the
	// protocol version (big-endian u16); the token's id follows.
	preamble := binary.BigEndian.AppendUint16([]byte("RXFD"), 2)

	for _, tc := range []struct {
		name      string
		dst       *daemon
		enc       string // cp --data-encryption
		plaintext bool
	}{
		{"encryption auto (on across the network)", c.n2, "auto", false},
		{"encryption off", plain, "off", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wire := startCapture(t, c.NS2, "tcp")
			r := rxferIn(t, c.NS1, append(append([]string{"cp", "--token-file", tokFile, "--data-encryption", tc.enc}, c.as("client-ops")...),
				c.n1.At("/marked.bin"), tc.dst.At("/copy.bin"))...)
			if r.Code != 0 || !strings.HasPrefix(r.lastLine(), "copied ") {
				t.Fatalf("copy failed:\n%s", r)
			}
			sameFile(t, c.n1.Path("marked.bin"), tc.dst.Path("copy.bin"))
			pcap := wire.stop(t)
			if len(pcap) < len(data) {
				t.Fatalf("the capture holds %d bytes, less than the %d-byte file: it missed the copy", len(pcap), len(data))
			}
			if onWire(pcap) || bytes.Contains(pcap, bearer) {
				t.Fatal("the bearer token is on the wire")
			}
			sawMarker, sawPreamble := bytes.Contains(pcap, marker), bytes.Contains(pcap, preamble)
			if tc.plaintext != sawMarker || tc.plaintext != sawPreamble {
				t.Fatalf("capture of %d bytes: marker visible %v, data preamble visible %v; want both %v", len(pcap), sawMarker, sawPreamble, tc.plaintext)
			}
		})
	}
	// The control for the token assertions: a daemon without TLS, pushed to
	// from the CLI with the same token, shows it on the wire.
	t.Run("control plane without TLS", func(t *testing.T) {
		clear := startDaemon(t, daemonConfig{NS: c.NS2, ID: "clear", Listen: c.IP2 + ":7490", DataListen: c.IP2 + ":7491",
			TokenFile: tokFile, Extra: []string{"--data-encryption", "off"}})
		wire := startCapture(t, c.NS2, "tcp")
		r := rxferIn(t, c.NS1, "cp", "--token-file", tokFile, "--data-encryption", "off", c.n1.Path("marked.bin"), clear.At("/copy.bin"))
		if r.Code != 0 || !strings.HasPrefix(r.lastLine(), "copied ") {
			t.Fatalf("copy failed:\n%s", r)
		}
		if pcap := wire.stop(t); !onWire(pcap) || !bytes.Contains(pcap, marker) {
			t.Fatalf("a plaintext control plane's capture (%d bytes) lacks the bearer token (%v) or the marker (%v)", len(pcap), onWire(pcap), bytes.Contains(pcap, marker))
		}
	})
}
