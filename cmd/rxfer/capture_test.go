package main

// A packet capture of the TCP data channel between two network namespaces:
// with --data-encryption on it shows neither the data token nor a marker
// planted in the file; with encryption off the marker is there (the capture
// does see plaintext), and of the token only its public id, never its secret.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// capture is a tcpdump running in a namespace, writing to a pcap file.
type capture struct {
	cmd    *exec.Cmd
	file   string
	stderr chan string // the rest of tcpdump's messages, once it exits
}

// startCapture runs `tcpdump -i any --immediate-mode -B 131072 -U -w FILE
// FILTER` in ns and returns once it is listening: immediate mode, or packets
// still in the kernel's buffer when the capture stops are lost; a 128 MiB
// buffer, so that none is dropped (stop checks).
func startCapture(t *testing.T, ns, filter string) *capture {
	t.Helper()
	c := &capture{file: filepath.Join(t.TempDir(), "data.pcap"), stderr: make(chan string, 1)}
	c.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, "tcpdump", "-i", "any", "--immediate-mode", "-B", "131072", "-U", "-s", "0", "-w", c.file}, strings.Fields(filter)...)...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	listening := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		ok := false
		var rest []string
		for sc.Scan() {
			if !ok && strings.Contains(sc.Text(), "listening on") {
				ok = true
				listening <- true
			}
			rest = append(rest, sc.Text())
		}
		if !ok {
			listening <- false
		}
		c.stderr <- strings.Join(rest, "; ")
	}()
	select {
	case ok := <-listening:
		if !ok {
			c.cmd.Wait()
			t.Fatalf("tcpdump in %s exited before listening", ns)
		}
	case <-time.After(30 * time.Second): // a hang guard only
		c.cmd.Process.Kill()
		t.Fatal("tcpdump did not start listening")
	}
	t.Cleanup(func() { c.cmd.Process.Kill(); c.cmd.Wait() })
	return c
}

// stop ends the capture and returns the pcap file's bytes.
func (c *capture) stop(t *testing.T) []byte {
	t.Helper()
	c.cmd.Process.Signal(syscall.SIGINT)
	msgs := <-c.stderr
	c.cmd.Wait()
	t.Logf("tcpdump %s: %s", c.cmd.Args[len(c.cmd.Args)-1], msgs)
	if !strings.Contains(msgs, " 0 packets dropped by kernel") {
		t.Fatalf("tcpdump dropped packets, so the capture proves nothing: %s", msgs)
	}
	b, err := os.ReadFile(c.file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tokenFromControl finds the data token in a capture of the plaintext control
// plane: the Prepare reply's TcpChannel is address (field 1) then token
// (field 2, 48 bytes). (Once the control plane runs TLS, the token has to
// come from elsewhere; the data-port assertions stay the same.)
func tokenFromControl(t *testing.T, pcap []byte, dataAddr string) []byte {
	t.Helper()
	pat := append([]byte{0x0a, byte(len(dataAddr))}, dataAddr...)
	pat = append(pat, 0x12, 48)
	i := bytes.Index(pcap, pat)
	if i < 0 || len(pcap) < i+len(pat)+48 {
		t.Fatalf("no TcpChannel for %s in the control-plane capture (%d bytes)", dataAddr, len(pcap))
	}
	return pcap[i+len(pat) : i+len(pat)+48]
}

func TestNetnsCaptureDataEncryption(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Skip("capture test skipped: tcpdump is not installed (make deps installs it)")
	}
	p := newNetnsPair(t)
	src := startDaemon(t, daemonConfig{NS: p.NS1, ID: "src", Listen: p.IP1 + ":7470", DataListen: p.IP1 + ":7471", Extra: []string{"--insecure"}})
	encDst := startDaemon(t, daemonConfig{NS: p.NS2, ID: "enc", Listen: p.IP2 + ":7470", DataListen: p.IP2 + ":7471", Extra: []string{"--insecure"}})
	plainDst := startDaemon(t, daemonConfig{NS: p.NS2, ID: "plain", Listen: p.IP2 + ":7480", DataListen: p.IP2 + ":7481",
		Extra: []string{"--insecure", "--data-encryption", "off"}})
	marker := []byte(fmt.Sprintf("RXFER-PLANTED-MARKER-%d-%d", os.Getpid(), time.Now().UnixNano()))
	data := make([]byte, 4<<20)
	for i := 0; i+len(marker) <= len(data); i += 32 << 10 {
		copy(data[i:], marker)
	}
	writeFile(t, src.Path("marked.bin"), data)

	for _, tc := range []struct {
		name       string
		dst        *daemon
		dataPort   string
		encryption string
		wantEnc    []string
	}{
		{"encryption on", encDst, "7471", "on", []string{"tls", "ktls"}},
		{"encryption off", plainDst, "7481", "off", []string{"off"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctlPort := strings.TrimPrefix(tc.dst.Control, p.IP2+":")
			dataCap := startCapture(t, p.NS2, "tcp port "+tc.dataPort)
			ctlCap := startCapture(t, p.NS2, "tcp port "+ctlPort)
			r := rxferIn(t, p.NS1, "cp", "--json", "--data-encryption", tc.encryption, src.At("/marked.bin"), tc.dst.At("/copy.bin"))
			if r.Code != 0 {
				t.Fatalf("copy failed:\n%s", r)
			}
			var final struct {
				State          string `json:"state"`
				DataEncryption string `json:"data_encryption"`
			}
			if err := json.Unmarshal([]byte(r.lastLine()), &final); err != nil || final.State != "STATE_COMMITTED" {
				t.Fatalf("last event %q: %v", r.lastLine(), err)
			}
			if !strings.Contains(strings.Join(tc.wantEnc, " "), final.DataEncryption) || final.DataEncryption == "" {
				t.Fatalf("data_encryption %q, want one of %v", final.DataEncryption, tc.wantEnc)
			}
			sameFile(t, src.Path("marked.bin"), tc.dst.Path("copy.bin"))
			wire, ctl := dataCap.stop(t), ctlCap.stop(t)
			tok := tokenFromControl(t, ctl, p.IP2+":"+tc.dataPort)
			id, secret := tok[:16], tok[16:]
			if bytes.Contains(wire, secret) {
				t.Fatal("the data token's secret is on the data wire")
			}
			if tc.encryption == "on" {
				if bytes.Contains(wire, marker) || bytes.Contains(wire, id) {
					t.Fatalf("encrypted capture (%d bytes) shows the marker (%v) or the token id (%v)", len(wire), bytes.Contains(wire, marker), bytes.Contains(wire, id))
				}
				return
			}
			if !bytes.Contains(wire, marker) || !bytes.Contains(wire, id) {
				t.Fatalf("plaintext capture (%d bytes) lacks the marker (%v) or the token id (%v): the capture does not see the data", len(wire), bytes.Contains(wire, marker), bytes.Contains(wire, id))
			}
		})
	}
}
