// Command rxfer-testbed boots one or two qemu (TCG) guests with a real
// rdma_rxe device and runs a host command line inside each of them.
//
// The guest is a Debian kernel plus a small busybox initramfs built by
// testbed/guest/build.sh; it mounts the host root read-only over 9p under a
// tmpfs overlay, so host paths (test binaries built with `go test -c`,
// ib_write_bw, ...) work unchanged. Output of each guest is streamed with a
// "[vmN] " prefix, the exit status of the command is returned, a timeout is
// enforced and qemu is killed on every exit path.
//
// Usage:
//
//	rxfer-testbed [flags] run -- COMMAND [ARG...]   run COMMAND in each VM
//	rxfer-testbed [flags] shell                     interactive shell in one VM
//	rxfer-testbed [flags] guest                     build the guest, print its dir
//
// In each guest the command sees RXFER_TESTBED=1 (a device must exist),
// RXFER_VM_INDEX, RXFER_VM_COUNT, RXFER_VM_IP and RXFER_PEER_IP (two VMs).
// See testbed/README.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// config is everything a run needs; filled from flags.
type config struct {
	vms       int
	timeout   time.Duration
	selfcheck bool
	dir       string
	cache     string
	memMiB    int
	smp       int
	cpu       string
	mtu       int
	env       []string
	testbed   string // the testbed/ source directory
	qemu      string
}

type envList []string

func (e *envList) String() string     { return strings.Join(*e, " ") }
func (e *envList) Set(s string) error { *e = append(*e, s); return nil }

func main() {
	os.Exit(run())
}

func run() int {
	var cfg config
	var env envList
	wd, _ := os.Getwd()
	self, _ := os.Executable()
	fs := flag.NewFlagSet("rxfer-testbed", flag.ContinueOnError)
	fs.IntVar(&cfg.vms, "vms", 1, "number of VMs (1: two processes on one rxe0; 2: rxe across a virtual link)")
	fs.DurationVar(&cfg.timeout, "timeout", 15*time.Minute, "kill the VMs and fail after this long")
	fs.BoolVar(&cfg.selfcheck, "selfcheck", false, "run ib_write_bw on rxe0 before the command")
	fs.StringVar(&cfg.dir, "C", wd, "working directory of the command in the guest (a host path)")
	fs.StringVar(&cfg.testbed, "testbed", guessTestbedDir(wd, self), "the testbed/ source directory")
	fs.StringVar(&cfg.cache, "cache", "", "guest cache directory (default TESTBED/.cache)")
	fs.IntVar(&cfg.memMiB, "m", 2048, "guest RAM in MiB")
	fs.StringVar(&cfg.cpu, "cpu", defaultCPU, "qemu -cpu model of the guests")
	fs.IntVar(&cfg.smp, "smp", 0, "vCPUs per guest (default 2 with one VM, 1 each with two: TCG threads share the host's cores)")
	fs.IntVar(&cfg.mtu, "mtu", 9000, "eth0 MTU in the guest (9000 gives rxe active_mtu 4096)")
	fs.StringVar(&cfg.qemu, "qemu", "qemu-system-x86_64", "qemu binary")
	fs.Var(&env, "e", "NAME=VALUE to export in the guest (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: rxfer-testbed [flags] run -- COMMAND [ARG...] | shell | guest\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	cfg.env = env
	if cfg.cache == "" {
		cfg.cache = filepath.Join(cfg.testbed, ".cache")
	}
	if cfg.smp == 0 {
		cfg.smp = 3 - cfg.vms
	}
	if cfg.vms < 1 || cfg.vms > 2 {
		fmt.Fprintln(os.Stderr, "rxfer-testbed: -vms must be 1 or 2")
		return 2
	}
	args := fs.Args()
	if len(args) == 0 {
		fs.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	switch args[0] {
	case "guest":
		dir, err := buildGuest(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "rxfer-testbed:", err)
			return 1
		}
		fmt.Println(dir)
		return 0
	case "run":
		cmd := args[1:]
		if len(cmd) > 0 && cmd[0] == "--" {
			cmd = cmd[1:]
		}
		if len(cmd) == 0 {
			fmt.Fprintln(os.Stderr, "rxfer-testbed: run needs a command")
			return 2
		}
		return runVMs(ctx, cfg, shellQuote(cmd), false)
	case "shell":
		cfg.vms = 1
		return runVMs(ctx, cfg, `exec setsid -c /bin/bash -i </dev/ttyS0 >/dev/ttyS0 2>&1`, true)
	}
	fs.Usage()
	return 2
}

// guessTestbedDir finds testbed/ from the working directory (a repo checkout)
// or from the binary's location.
func guessTestbedDir(wd, self string) string {
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "testbed", "guest", "init")); err == nil {
			return filepath.Join(d, "testbed")
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return filepath.Join(filepath.Dir(self), "..", "..")
}

func buildGuest(ctx context.Context, cfg config) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(cfg.testbed, "guest", "build.sh"), cfg.cache)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building the guest: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// shellQuote renders argv as one POSIX shell command line.
func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// vmIP is the guest address of VM i on the virtual link.
func vmIP(i int) string { return fmt.Sprintf("10.77.0.%d", i+1) }

// writeScript writes the script VM i runs after init chroots into the host root.
func writeScript(cfg config, runDir string, i int, command string) (string, error) {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# generated by rxfer-testbed\n")
	exports := []string{
		"PATH=" + os.Getenv("PATH") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "TMPDIR=/tmp", "TERM=" + envOr("TERM", "dumb"),
		"RXFER_TESTBED=1",
		"RXFER_VM_INDEX=" + strconv.Itoa(i),
		"RXFER_VM_COUNT=" + strconv.Itoa(cfg.vms),
		"RXFER_VM_IP=" + vmIP(i),
		"RXFER_MTU=" + strconv.Itoa(cfg.mtu),
	}
	if cfg.vms == 2 {
		exports = append(exports, "RXFER_PEER_IP="+vmIP(1-i))
	}
	if cfg.selfcheck {
		exports = append(exports, "RXFER_SELFCHECK=1")
	}
	exports = append(exports, cfg.env...)
	for _, e := range exports {
		name, val, ok := strings.Cut(e, "=")
		if !ok {
			return "", fmt.Errorf("-e %q: want NAME=VALUE", e)
		}
		fmt.Fprintf(&b, "export %s=%s\n", name, shellQuote([]string{val}))
	}
	fmt.Fprintf(&b, ". %s\n", shellQuote([]string{filepath.Join(cfg.testbed, "guest", "setup.sh")}))
	fmt.Fprintf(&b, "cd %s || exit 125\n", shellQuote([]string{cfg.dir}))
	b.WriteString(command + "\n")
	path := filepath.Join(runDir, fmt.Sprintf("vm%d.sh", i))
	return path, os.WriteFile(path, []byte(b.String()), 0o755)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// vm is one running qemu.
type vm struct {
	index  int
	cmd    *exec.Cmd
	start  time.Time
	status int // exit status reported by the guest; -1 if none
	ready  time.Duration
	done   chan struct{}
}

var (
	exitRE  = regexp.MustCompile(`RXFER-TESTBED-EXIT (\d+)`)
	readyRE = regexp.MustCompile(`RXFER-TESTBED-READY`)
)

func runVMs(ctx context.Context, cfg config, command string, interactive bool) int {
	var err error
	if cfg.testbed, err = filepath.Abs(cfg.testbed); err != nil {
		fmt.Fprintln(os.Stderr, "rxfer-testbed:", err)
		return 1
	}
	if cfg.cache, err = filepath.Abs(cfg.cache); err != nil {
		fmt.Fprintln(os.Stderr, "rxfer-testbed:", err)
		return 1
	}
	if cfg.dir, err = filepath.Abs(cfg.dir); err != nil {
		fmt.Fprintln(os.Stderr, "rxfer-testbed:", err)
		return 1
	}
	guest, err := buildGuest(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rxfer-testbed:", err)
		return 1
	}
	pruneRunDirs(cfg.cache)
	runDir, err := os.MkdirTemp(cfg.cache, fmt.Sprintf("run-%d-", os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "rxfer-testbed:", err)
		return 1
	}
	defer os.RemoveAll(runDir)

	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	sock := filepath.Join(runDir, "link.sock")
	vms := make([]*vm, cfg.vms)
	// Kill every qemu we started, whatever happens below.
	defer func() {
		for _, v := range vms {
			if v != nil {
				v.kill()
			}
		}
	}()
	begin := time.Now()
	for i := range vms {
		script, err := writeScript(cfg, runDir, i, command)
		if err != nil {
			fmt.Fprintln(os.Stderr, "rxfer-testbed:", err)
			return 1
		}
		if i == 1 {
			// The client side of the stream netdev must find the server's socket.
			if err := waitForFile(ctx, sock, 10*time.Second); err != nil {
				fmt.Fprintln(os.Stderr, "rxfer-testbed: vm0 did not create its link socket:", err)
				return 1
			}
		}
		v, err := startVM(cfg, guest, script, sock, i, interactive)
		if err != nil {
			fmt.Fprintf(os.Stderr, "rxfer-testbed: starting vm%d: %v\n", i, err)
			return 1
		}
		vms[i] = v
	}

	// When a VM fails, give the others a short grace period (their peer is
	// gone, they may wait for it forever) before killing them.
	failed := make(chan struct{}, len(vms))
	go func() {
		select {
		case <-ctx.Done():
		case <-failed:
			select {
			case <-ctx.Done():
			case <-time.After(30 * time.Second):
			}
		}
		for _, v := range vms {
			v.kill()
		}
	}()
	var wg sync.WaitGroup
	for _, v := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-v.done
			if v.status != 0 {
				failed <- struct{}{}
			}
		}()
	}
	wg.Wait()

	rc := 0
	for _, v := range vms {
		switch {
		case v.status < 0 && ctx.Err() == context.DeadlineExceeded:
			fmt.Fprintf(os.Stderr, "rxfer-testbed: vm%d: timed out after %v\n", v.index, cfg.timeout)
			rc = max(rc, 124)
		case v.status < 0 && ctx.Err() != nil:
			fmt.Fprintf(os.Stderr, "rxfer-testbed: vm%d: interrupted\n", v.index)
			rc = max(rc, 130)
		case v.status < 0:
			fmt.Fprintf(os.Stderr, "rxfer-testbed: vm%d: guest reported no exit status (qemu: %v; see its console above)\n", v.index, v.cmd.ProcessState)
			rc = max(rc, 125)
		default:
			fmt.Fprintf(os.Stderr, "rxfer-testbed: vm%d: exit status %d (ready after %.1fs, total %.1fs)\n",
				v.index, v.status, v.ready.Seconds(), time.Since(begin).Seconds())
			if v.status != 0 && rc == 0 {
				rc = v.status
			}
		}
	}
	return rc
}

// pruneRunDirs removes run directories left by runners that were killed
// (their pid no longer exists); a SIGKILL leaves no chance to clean up.
func pruneRunDirs(cache string) {
	dirs, _ := filepath.Glob(filepath.Join(cache, "run-*-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.Split(filepath.Base(d), "-")[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

func waitForFile(ctx context.Context, path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + path)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func startVM(cfg config, guest, script, sock string, i int, interactive bool) (*vm, error) {
	// Prefer the uncompressed kernel (PVH boot, no decompressor under TCG).
	kernel := filepath.Join(guest, "vmlinux")
	if _, err := os.Stat(kernel); err != nil {
		kernel = filepath.Join(guest, "vmlinuz")
	}
	args := []string{
		"-accel", "tcg,thread=multi", "-cpu", cfg.cpu,
		"-smp", strconv.Itoa(cfg.smp), "-m", strconv.Itoa(cfg.memMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", kernel,
		"-initrd", filepath.Join(guest, "initramfs.cpio.gz"),
		"-append", "console=ttyS0 quiet panic=-1 rxfer.script=" + script,
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,mac=52:54:00:77:00:%02x", i+1),
	}
	switch {
	case cfg.vms == 1:
		// A NIC with no outside world: rxe needs a netdev; loopback traffic
		// never leaves the guest.
		args = append(args, "-netdev", "user,id=n0,restrict=on")
	default:
		args = append(args, "-netdev", fmt.Sprintf("stream,id=n0,server=%s,addr.type=unix,addr.path=%s",
			map[bool]string{true: "on", false: "off"}[i == 0], sock))
	}
	if interactive {
		args = append(args, "-serial", "mon:stdio")
	} else {
		args = append(args, "-serial", "stdio")
	}
	cmd := exec.Command(cfg.qemu, args...)
	// Own process group so we can kill it whole; SIGKILL if we die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: !interactive, Pdeathsig: syscall.SIGKILL}
	v := &vm{index: i, cmd: cmd, status: -1, done: make(chan struct{})}
	prefix := fmt.Sprintf("[vm%d] ", i)
	var out io.Reader
	var pw *io.PipeWriter
	if interactive {
		// qemu owns the terminal; we only watch a copy for the exit marker.
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		cmd.Stdin = os.Stdin
		cmd.Stdout = io.MultiWriter(os.Stdout, pw)
		cmd.Stderr = os.Stderr
		out = pr
	} else {
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = cmd.Stdout // qemu's own errors, prefixed like the console
		out = stdout
	}
	v.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if m := exitRE.FindStringSubmatch(line); m != nil {
				v.status, _ = strconv.Atoi(m[1])
			}
			if v.ready == 0 && readyRE.MatchString(line) {
				v.ready = time.Since(v.start)
			}
			if !interactive {
				fmt.Printf("%s%s\n", prefix, line)
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		if interactive {
			cmd.Wait()
			pw.Close()
			<-scanned
		} else {
			<-scanned // all reads from the pipe must finish before Wait
			cmd.Wait()
		}
		close(v.done)
	}()
	return v, nil
}

// kill ends the VM's qemu (its whole process group) if it still runs, and
// waits until it is gone.
func (v *vm) kill() {
	select {
	case <-v.done:
		return
	default:
	}
	if p := v.cmd.Process; p != nil {
		syscall.Kill(-p.Pid, syscall.SIGKILL)
		p.Kill()
	}
	<-v.done
}

// defaultCPU is the guests' CPU model: everything TCG can emulate. Note
// "max,-erms,-fsrm": without ERMS the guest kernel copies and clears memory
// with unrolled loops instead of rep movsb/stosb, which TCG runs a byte per
// iteration; rxe (all kernel copies) then runs ~2x faster (ib_write_bw 60 →
// 140 MB/s in one VM) while user-space code does not change. Both are
// distortions of a real CPU in opposite directions; the suite and the
// benchmarks keep the model they were measured with.
const defaultCPU = "max"
