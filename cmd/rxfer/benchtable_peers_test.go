package main

// What `make bench` measures rxfer against, on the same veth and in the same
// run: a plain 4 KiB read()/write() pair, iperf3 -Z, the destination file
// system's own write+fsync, rsync in daemon mode and scp; and what it reads
// from a running daemon (/proc, the --debug-addr endpoint).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// inNetns runs f on an OS thread that has joined network namespace ns
// (named by `ip netns`), so sockets f creates belong to ns, then moves the
// thread back. The thread must not exit: daemons started with Pdeathsig get
// their signal when the thread that forked them ends, and this may be it.
// Only if it cannot go back does it stay locked (and then Go ends it).
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's netns: %w", err)
			return
		}
		defer unix.Close(home)
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = f()
		if unix.Setns(home, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// dialInNetns dials addr over TCP from inside ns.
func dialInNetns(ctx context.Context, ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}

// rwBuf is the plain pair's read and write size: what a naive copy program uses.
const rwBuf = 4 << 10

// rwCopy copies src (read in ns1) to dst (written in ns2) through one TCP
// connection across the veth with 4 KiB read() and write() calls on both
// ends, no fsync (dst is on tmpfs), and returns the wall time from the dial
// to the receiver's close.
func rwCopy(p netnsPair, src, dst string) (float64, error) {
	var ln net.Listener
	if err := inNetns(p.NS2, func() (err error) { ln, err = net.Listen("tcp", p.IP2+":7460"); return err }); err != nil {
		return 0, err
	}
	defer ln.Close()
	return readWriteTransfer(ln, func() (net.Conn, error) { return dialInNetns(context.Background(), p.NS1, p.IP2+":7460") }, src, dst, rwBuf, false)
}

// iperf3Bytes sends n bytes with iperf3 -Z (sendfile) from NS1 to a one-off
// server in NS2 and returns the received rate in GB/s.
func iperf3Bytes(p netnsPair, n int64) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := exec.CommandContext(ctx, "ip", "netns", "exec", p.NS2, "iperf3", "-s", "-1", "-B", p.IP2, "--forceflush")
	out, err := srv.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer srv.Wait()
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.Contains(sc.Text(), "Server listening") {
	}
	go io.Copy(io.Discard, out) // until the server exits
	b, err := exec.CommandContext(ctx, "ip", "netns", "exec", p.NS1, "iperf3", "-c", p.IP2, "-Z", "-n", strconv.FormatInt(n, 10), "-J").Output()
	if err != nil {
		srv.Process.Kill()
		return 0, fmt.Errorf("iperf3 client: %w: %s", err, b)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(b, &res); err != nil || res.End.SumReceived.BitsPerSecond == 0 {
		return 0, fmt.Errorf("iperf3 -J output has no received rate (%v): %.200s", err, b)
	}
	return res.End.SumReceived.BitsPerSecond / 8 / 1e9, nil
}

// fsWriteRate writes n bytes to a new file in dir with 1 MiB writes, fsyncs
// it, and returns the rate in GB/s: what that file system itself sustains.
func fsWriteRate(dir string, n int64) (float64, error) {
	path := filepath.Join(dir, "fs-rate.bin")
	defer os.Remove(path)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*131 + i>>8) // not zeros: nothing may short-cut them
	}
	start := time.Now()
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	for left := n; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(left, int64(len(buf)))]); err != nil {
			f.Close()
			return 0, err
		}
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds() / 1e9, nil
}

// runIn runs name args in ns and returns the wall time it took.
func runIn(ns string, name string, args ...string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %w: %.500s", name, err, out)
	}
	return time.Since(start).Seconds(), nil
}

// startRsyncd serves dir as rsync module "bench" (writable, no chroot) from
// an rsync daemon in NS2 on port 8873, until the test ends; it returns once
// the daemon accepts connections.
func startRsyncd(t *testing.T, p netnsPair, dir string) error {
	conf := filepath.Join(t.TempDir(), "rsyncd.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("use chroot = no\nuid = root\ngid = root\n[bench]\n  path = %s\n  read only = no\n", dir)), 0o600); err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", p.NS2, "rsync", "--daemon", "--no-detach", "--config="+conf, "--address="+p.IP2, "--port=8873")
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// rsync prints no ready line: poll the port, bounded.
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := dialInNetns(context.Background(), p.NS1, p.IP2+":8873")
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rsync daemon not listening after 30 s: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sshPeer is an sshd in NS2 with a throwaway host key, and the client key and
// options scp in NS1 uses to reach it.
type sshPeer struct {
	args []string // scp options
	dest string   // user@IP2:
}

// startSSHD starts /usr/sbin/sshd in NS2 on port 2222 with a fresh host key
// and a fresh client key (nothing from ~/.ssh or /etc/ssh), until the test
// ends, and returns once it listens.
func startSSHD(t *testing.T, p netnsPair) (sshPeer, error) {
	dir := t.TempDir()
	for _, k := range []string{"host", "client"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rxfer-bench", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return sshPeer{}, fmt.Errorf("ssh-keygen: %w: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "client.pub"))
	if err != nil {
		return sshPeer{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return sshPeer{}, err
	}
	conf := fmt.Sprintf("ListenAddress %s:2222\nHostKey %s\nAuthorizedKeysFile %s\nPidFile none\nUsePAM no\nStrictModes no\n"+
		"PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\n",
		p.IP2, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"))
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		return sshPeer{}, err
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // sshd's privilege-separation directory
		return sshPeer{}, err
	}
	cmd := exec.Command("ip", "netns", "exec", p.NS2, "/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return sshPeer{}, err
	}
	if err := cmd.Start(); err != nil {
		return sshPeer{}, err
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(stderr)
	var seen []string
	listening := false
	for !listening && sc.Scan() {
		listening = strings.Contains(sc.Text(), "Server listening")
		seen = append(seen, sc.Text())
	}
	if !listening {
		return sshPeer{}, fmt.Errorf("sshd did not start: %s", strings.Join(seen, "\n"))
	}
	go io.Copy(io.Discard, stderr)
	u, err := user.Current()
	if err != nil {
		return sshPeer{}, err
	}
	return sshPeer{
		args: []string{"-q", "-F", "/dev/null", "-i", filepath.Join(dir, "client"), "-P", "2222", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes"},
		dest: u.Username + "@" + p.IP2 + ":",
	}, nil
}

// procStatusKiB reads a "Name:   N kB" field of /proc/PID/status.
func procStatusKiB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
}

// openFDs counts the entries of /proc/PID/fd.
func openFDs(pid int) (int, error) {
	e, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(e), err
}

var debugAddrLine = regexp.MustCompile(`debug endpoint \(net/http/pprof\) listening" addr=(\S+)`)

// debugAddr is the --debug-addr endpoint the daemon logged.
func (d *daemon) debugAddr() (string, error) {
	m := debugAddrLine.FindStringSubmatch(d.stderr.String())
	if m == nil {
		return "", errors.New("the daemon logged no debug endpoint: start it with --debug-addr 127.0.0.1:0")
	}
	return m[1], nil
}

// goroutines reads the daemon's goroutine count from its debug endpoint
// (the first line of /debug/pprof/goroutine?debug=1: "goroutine profile: total N").
func (d *daemon) goroutines() (int, error) {
	addr, err := d.debugAddr()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("unexpected goroutine profile header %q", line)
	}
	return strconv.Atoi(n)
}
