package main

// Issue 17's directory-tree rows of `make bench` (TestBenchTable): three
// generated trees copied node to node with `rxfer cp -r`, against rsync in
// daemon mode and tar piped over a TCP socket (netcat-openbsd), across the
// table's veth and across the loopback of the destination's namespace.
// Every copy is checked at the destination before its time counts.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// treePlan is how big the generated trees are in one mode.
type treePlan struct {
	SmallFiles, SmallDirs int   // tree 1: SmallFiles files of 4 KiB
	MiBFiles, MiBDirs     int   // tree 2: MiBFiles files of 1 MiB
	MixedBytes            int64 // tree 3: MixedBytes in all, sizes log-uniform in [MixedMin, MixedMax]
	MixedMin, MixedMax    int64
	MixedDirs             int
	Scale                 string // "" at the sizes, else how this mode scaled them (in every row's metric)
}

// treePlans: full is issue 17's trees; quick is a quarter of them (as the
// quick table's 256 MiB for 1 GiB); smoke is tiny, for the plumbing check.
var treePlans = map[string]treePlan{
	"full": {SmallFiles: 10000, SmallDirs: 100, MiBFiles: 1000, MiBDirs: 10,
		MixedBytes: 2 << 30, MixedMin: 1 << 10, MixedMax: 64 << 20, MixedDirs: 16},
	"quick": {SmallFiles: 2500, SmallDirs: 25, MiBFiles: 250, MiBDirs: 10,
		MixedBytes: 512 << 20, MixedMin: 1 << 10, MixedMax: 64 << 20, MixedDirs: 16, Scale: "quick mode: 1/4 of the issue's tree"},
	"smoke": {SmallFiles: 64, SmallDirs: 4, MiBFiles: 4, MiBDirs: 2,
		MixedBytes: 4 << 20, MixedMin: 1 << 10, MixedMax: 1 << 20, MixedDirs: 4, Scale: "smoke mode: a tiny tree"},
}

// Ports of the tree rows in the destination namespace (the table's own
// daemons and baselines use 7460-7493, 8873 and 2222).
const (
	treeNetnsPort   = 7570 // destination daemon on the veth (+1: data)
	treeLoSrcPort   = 7572 // loopback source daemon (+1: data)
	treeLoDstPort   = 7574 // loopback destination daemon (+1: data)
	treeHugePort    = 7576 // tree 3h: destination daemon on a huge=within_size tmpfs (+1: data)
	treeRsyncPort   = 8970 // rsync daemon, modules "tree" and "treeh", every address of NS2
	treeNCPort      = 8971 // nc -l of the tar baseline
	treeSampleFiles = 16   // files per tree whose SHA-256 each copy must match (plus the last and the largest)
)

// benchTree is a generated tree on the source host and what every copy of
// it must hold.
type benchTree struct {
	Name   string              // its directory beneath the source root, and the copy's beneath the destination root
	Dir    string              // its path on this host
	Files  int                 // regular files
	Bytes  int64               // their sizes in all
	Sample map[string][32]byte // SHA-256 of some files, by path relative to Dir
}

// uniformSizes is n files of size bytes.
func uniformSizes(n int, size int64) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = size
	}
	return s
}

// logUniformSizes draws file sizes log-uniformly from [lo, hi] (seeded, so
// every run has the same tree) until they add up to exactly total; the last
// file takes the remainder, so it may be below lo when total is small.
func logUniformSizes(total, lo, hi int64, seed uint64) []int64 {
	rng := rand.New(rand.NewPCG(seed, 17))
	var sizes []int64
	for left := total; left > 0; {
		n := int64(math.Exp(math.Log(float64(lo)) + rng.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))))
		n = max(lo, min(hi, n))
		if left-n < lo { // no file smaller than lo after this one: take the rest
			n = left
		}
		sizes = append(sizes, n)
		left -= n
	}
	return sizes
}

// writeTree writes a file of each size into dir (created) as
// dNNN/fNNNNNN.bin, spread round-robin over dirs directories, with
// pseudo-random content from seed and the file's index, and remembers the
// SHA-256 of a sample of them. It does not sync.
func writeTree(dir string, sizes []int64, dirs int, seed uint64) (*benchTree, error) {
	tr := &benchTree{Name: filepath.Base(dir), Dir: dir, Files: len(sizes), Sample: map[string][32]byte{}}
	for d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("d%03d", d)), 0o755); err != nil {
			return nil, err
		}
	}
	largest := 0
	for i, n := range sizes {
		if n > sizes[largest] {
			largest = i
		}
	}
	step := max(1, len(sizes)/treeSampleFiles)
	for i, n := range sizes {
		rel := filepath.Join(fmt.Sprintf("d%03d", i%dirs), fmt.Sprintf("f%06d.bin", i))
		var s [32]byte
		binary.LittleEndian.PutUint64(s[0:], seed)
		binary.LittleEndian.PutUint64(s[8:], uint64(i))
		f, err := os.Create(filepath.Join(dir, rel))
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(s), n)
		if err = errors.Join(err, f.Close()); err != nil {
			return nil, err
		}
		if i%step == 0 || i == len(sizes)-1 || i == largest {
			tr.Sample[rel] = [32]byte(h.Sum(nil))
		}
		tr.Bytes += n
	}
	return tr, nil
}

// verifyTree says what is wrong with dst as a copy of tr: a different
// number of regular files or total bytes, anything but directories and
// regular files, or a sampled file whose SHA-256 differs. So a broken copy
// can never count as a fast one.
func verifyTree(tr *benchTree, dst string) error {
	files, total := 0, int64(0)
	err := filepath.WalkDir(dst, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file (%v)", path, d.Type())
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files++
		total += info.Size()
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy of %s: %w", tr.Name, err)
	}
	if files != tr.Files || total != tr.Bytes {
		return fmt.Errorf("copy of %s holds %d files of %d bytes in all, want %d files of %d bytes", tr.Name, files, total, tr.Files, tr.Bytes)
	}
	for _, rel := range slices.Sorted(maps.Keys(tr.Sample)) {
		f, err := os.Open(filepath.Join(dst, rel))
		if err != nil {
			return fmt.Errorf("copy of %s: %w", tr.Name, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("copy of %s: %w", tr.Name, err)
		}
		if [32]byte(h.Sum(nil)) != tr.Sample[rel] {
			return fmt.Errorf("copy of %s: %s differs from its source (SHA-256)", tr.Name, rel)
		}
	}
	return nil
}

// treeLink is one path the tree rows copy across: rxfer's CLI and the
// baselines' clients run in ClientNS, the destination's daemon, rsync
// daemon and nc listen on Host in the destination namespace.
type treeLink struct {
	Name       string // "netns" or "loopback"
	ClientNS   string
	Src, Dst   *daemon
	Host       string
	Single     float64 // GB/s of the single big-file copy on this link
	SingleNote string  // where Single comes from
	Module     string  // the rsync daemon's module of Dst's root ("" = "tree")
}

// rxferTree copies tr with `rxfer cp -r` from Src to Dst's root (so it
// lands at /tr.Name) and returns the wall time of the CLI process.
func (l treeLink) rxferTree(t *testing.T, tr *benchTree) (float64, error) {
	r := rxferIn(t, l.ClientNS, "cp", "-r", l.Src.At("/"+tr.Name), l.Dst.At("/"))
	if r.Code != 0 {
		msg, _, _ := strings.Cut(strings.TrimSpace(r.Stderr), "\n")
		return 0, fmt.Errorf("rxfer cp -r exited %d: %.300s", r.Code, msg)
	}
	return r.Took.Seconds(), nil
}

// rsyncTree copies tr into the rsync daemon's module of the destination
// root with `rsync -a --whole-file` and returns its wall time.
func (l treeLink) rsyncTree(tr *benchTree) (float64, error) {
	return runIn(l.ClientNS, "rsync", "-a", "--whole-file", tr.Dir, fmt.Sprintf("rsync://%s:%d/%s/", l.Host, treeRsyncPort, cmp.Or(l.Module, "tree")))
}

// tarNC copies srcDir's contents into dstDir (created) with `tar -cf - . |
// nc -N` in clientNS into `nc -l | tar -xf -` in serverNS (netcat-openbsd:
// -N shuts the socket down at the end of its input, so the listener sees
// EOF and exits). It returns the time from the client's start to the
// listener's tar exiting; the listener starts before and is not counted.
func tarNC(serverNS, clientNS, host, srcDir, dstDir string) (float64, error) {
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	port := strconv.Itoa(treeNCPort)
	// Each pipeline in its own process group, so a cancel ends nc and tar too.
	group := func(cmd *exec.Cmd) *exec.Cmd {
		cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}
		cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		return cmd
	}
	srv := group(exec.CommandContext(ctx, "ip", "netns", "exec", serverNS, "bash", "-o", "pipefail", "-c",
		`nc -l -n "$1" "$2" </dev/null | tar -C "$3" -xf -`, "tar-nc-server", host, port, dstDir))
	var srvOut bytes.Buffer // read only after Wait
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	// nc prints no ready line, and a probe connection would be the one it
	// accepts: poll ss for its listening socket, bounded.
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, _ := exec.CommandContext(ctx, "ip", "netns", "exec", serverNS, "ss", "-Hltn", "sport = :"+port).Output()
		if len(bytes.TrimSpace(out)) > 0 {
			break
		}
		select {
		case err := <-done:
			return 0, fmt.Errorf("nc -l | tar -x ended before listening: %v: %.500s", err, srvOut.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			return 0, fmt.Errorf("nc -l %s %s not listening after 30 s", host, port)
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	out, err := group(exec.CommandContext(ctx, "ip", "netns", "exec", clientNS, "bash", "-o", "pipefail", "-c",
		`tar -C "$1" -cf - . | nc -N -n "$2" "$3"`, "tar-nc-client", srcDir, host, port)).CombinedOutput()
	if err != nil {
		cancel()
		<-done
		return 0, fmt.Errorf("tar -cf - . | nc -N: %w: %.500s", err, out)
	}
	if err := <-done; err != nil {
		return 0, fmt.Errorf("nc -l | tar -xf -: %w: %.500s", err, srvOut.String())
	}
	return time.Since(start).Seconds(), nil
}

// startTreeRsyncd serves dir as rsync module "tree" (and hugeDir, if set,
// as "treeh"; writable, no chroot) on port treeRsyncPort of every address
// of namespace ns, until the test ends, and returns once it accepts
// connections.
func startTreeRsyncd(t *testing.T, ns, clientNS, host, dir, hugeDir string) error {
	conf := filepath.Join(t.TempDir(), "rsyncd-tree.conf")
	text := fmt.Sprintf("use chroot = no\nuid = root\ngid = root\n[tree]\n  path = %s\n  read only = no\n", dir)
	if hugeDir != "" {
		text += fmt.Sprintf("[treeh]\n  path = %s\n  read only = no\n", hugeDir)
	}
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return err
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "rsync", "--daemon", "--no-detach", "--config="+conf, fmt.Sprintf("--port=%d", treeRsyncPort))
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// rsync prints no ready line, and serves many connections: poll the port, bounded.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := dialInNetns(context.Background(), clientNS, fmt.Sprintf("%s:%d", host, treeRsyncPort))
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rsync daemon not listening on port %d after 30 s: %w", treeRsyncPort, err)
		}
	}
}

// treeResult is one tree's rounds on one link: GB/s of each verified copy,
// or the first failure of each tool (a tool fails once, then is not run again).
type treeResult struct {
	Rx, Rsync, Tar          []float64
	RxSecs, RsyncSecs       []float64
	TarSecs                 []float64
	RxErr, RsyncErr, TarErr error
}

// treeTools says which baselines a run has: a Skip is why one is not
// installed; RsyncErr, why the rsync daemon did not start.
type treeTools struct {
	RsyncSkip, TarSkip string
	RsyncErr           error
}

// measureTree copies tr across l rounds times, kinds interleaved, each into
// an emptied destination (root/tr.Name removed, and re-created for tar),
// and checks each copy with verifyTree before counting its time.
func measureTree(t *testing.T, l treeLink, p netnsPair, tr *benchTree, root string, rounds int, tools treeTools) treeResult {
	res := treeResult{RsyncErr: tools.RsyncErr}
	dst := filepath.Join(root, tr.Name)
	empty := func() {
		if err := os.RemoveAll(dst); err != nil {
			t.Fatalf("emptying the tree destination: %v", err)
		}
		unix.Sync()
	}
	run := func(f func() (float64, error), rates, secs *[]float64, errp *error) {
		if *errp != nil {
			return
		}
		empty()
		s, err := f()
		if err == nil {
			err = verifyTree(tr, dst)
		}
		if err != nil {
			*errp = err
			return
		}
		*rates = append(*rates, gbps(tr.Bytes, s))
		*secs = append(*secs, s)
	}
	for range rounds {
		run(func() (float64, error) { return l.rxferTree(t, tr) }, &res.Rx, &res.RxSecs, &res.RxErr)
		if tools.RsyncSkip == "" {
			run(func() (float64, error) { return l.rsyncTree(tr) }, &res.Rsync, &res.RsyncSecs, &res.RsyncErr)
		}
		if tools.TarSkip == "" {
			run(func() (float64, error) { return tarNC(p.NS2, l.ClientNS, l.Host, tr.Dir, dst) }, &res.Tar, &res.TarSecs, &res.TarErr)
		}
	}
	empty()
	return res
}

// treeRow compares rxfer's best rate with one baseline's. A failed or
// broken rxfer copy makes the row FAIL with its error, whatever the
// baseline; a baseline that could not run is SKIP (not installed) or a
// measurement failure (broken).
func treeRow(metric string, want float64, res treeResult, base []float64, baseName string, baseErr error, baseSkip, note string,
	broken func(string, string, error) benchRow) benchRow {
	target := "reported"
	if want > 0 {
		target = fmt.Sprintf(">= %.1fx", want)
	}
	if res.RxErr != nil {
		if len(base) > 0 {
			note = fmt.Sprintf("%s %.3f GB/s; %s", baseName, best(base), note)
		}
		return benchRow{Metric: metric, Unit: "GB/s", Target: target, Status: statusFail,
			Note: "rxfer copy failed: " + res.RxErr.Error() + "; " + note}
	}
	if baseSkip != "" {
		return skipRow(metric, target, baseSkip)
	}
	if baseErr != nil {
		return broken(metric, target, baseErr)
	}
	return ratioRow(metric, "GB/s", best(res.Rx), best(base), baseName, want, note)
}

// treeRows are one tree's rows on one link: against rsync and tar | nc,
// and for tree 2 against the link's single big-file copy too.
func treeRows(num int, desc string, l treeLink, tr *benchTree, res treeResult, rsyncWant, singleWant float64, tools treeTools,
	broken func(string, string, error) benchRow) []benchRow {
	secs := func(v []float64) string {
		if len(v) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f s", slices.Min(v))
	}
	note := fmt.Sprintf("%d files, %s; best of %d: rxfer %s, rsync %s, tar | nc %s; wall time, process start to exit; every copy checked (file count, bytes, SHA-256 of %d files)",
		tr.Files, size(tr.Bytes), max(len(res.Rx), len(res.Rsync), len(res.Tar)), secs(res.RxSecs), secs(res.RsyncSecs), secs(res.TarSecs), len(tr.Sample))
	metric := func(vs string) string {
		return fmt.Sprintf("tree %d. %s, %s: rxfer cp -r vs %s", num, desc, l.Name, vs)
	}
	var rows []benchRow
	if singleWant > 0 {
		rows = append(rows, treeRow(metric("the single-file copy"), singleWant, res, []float64{l.Single}, "single file", nil, "", note+"; "+l.SingleNote, broken))
	}
	return append(rows,
		treeRow(metric("rsync daemon --whole-file"), rsyncWant, res, res.Rsync, "rsync", res.RsyncErr, tools.RsyncSkip, note, broken),
		treeRow(metric("tar | nc"), 0, res, res.Tar, "tar | nc", res.TarErr, tools.TarSkip, note, broken))
}

// commas prints n with thousands separators.
func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// benchTrees is issue 17's rows: the three trees written into src's root
// and synced, then copied node to node into a tmpfs root, across the
// table's veth (from src) and across NS2's loopback (between two more
// daemons on the same roots). single is row 1's rate (GB/s) of the
// singleName copy, tree 2's baseline on the veth; on loopback the same
// file is copied for it.
func benchTrees(t *testing.T, p netnsPair, plan benchPlan, src *daemon, singleName string, single float64,
	have func(string) bool, broken func(string, string, error) benchRow) []benchRow {
	tp, ok := treePlans[plan.Mode]
	if !ok {
		t.Fatalf("no tree plan for mode %q", plan.Mode)
	}
	scale := ""
	if tp.Scale != "" {
		scale = " (" + tp.Scale + ")"
	}
	write := func(name string, sizes []int64, dirs int, seed uint64) *benchTree {
		tr, err := writeTree(src.Path(name), sizes, dirs, seed)
		if err != nil {
			t.Fatalf("writing tree %s: %v", name, err)
		}
		return tr
	}
	small := write("tree-4k", uniformSizes(tp.SmallFiles, 4<<10), tp.SmallDirs, 1)
	mib := write("tree-1m", uniformSizes(tp.MiBFiles, 1<<20), tp.MiBDirs, 2)
	mixed := write("tree-mixed", logUniformSizes(tp.MixedBytes, tp.MixedMin, tp.MixedMax, 3), tp.MixedDirs, 3)
	unix.Sync()
	trees := []struct {
		tr                    *benchTree
		desc                  string
		rsyncWant, singleWant float64
	}{
		{small, fmt.Sprintf("%s x 4 KiB files in %d dirs%s", commas(tp.SmallFiles), tp.SmallDirs, scale), 1.0, 0},
		{mib, fmt.Sprintf("%s x 1 MiB files in %d dirs%s", commas(tp.MiBFiles), tp.MiBDirs, scale), 0, 0.8},
		{mixed, fmt.Sprintf("mixed %s tree, %s files log-uniform %s-%s in %d dirs%s", size(tp.MixedBytes), commas(mixed.Files),
			size(tp.MixedMin), size(tp.MixedMax), tp.MixedDirs, scale), 2.0, 0},
	}

	// One tmpfs root takes one tree (or the single file) at a time; rsync
	// adds one temporary file at most.
	root := mountTmpfs(t, fmt.Sprint(max(tp.MixedBytes+tp.MixedMax, int64(tp.MiBFiles)<<20, plan.Size)+256<<20))
	serve := []string{"--insecure", "--data-encryption", "off"} // plaintext, like rsync and nc
	at := func(host string, port int) string { return fmt.Sprintf("%s:%d", host, port) }
	dst := startDaemon(t, daemonConfig{NS: p.NS2, ID: "bench-tree", Root: root,
		Listen: at(p.IP2, treeNetnsPort), DataListen: at(p.IP2, treeNetnsPort+1), Extra: serve})
	loSrc := startDaemon(t, daemonConfig{NS: p.NS2, ID: "bench-tree-lo-src", Root: src.Root,
		Listen: at("127.0.0.1", treeLoSrcPort), DataListen: at("127.0.0.1", treeLoSrcPort+1), Extra: serve})
	loDst := startDaemon(t, daemonConfig{NS: p.NS2, ID: "bench-tree-lo-dst", Root: root,
		Listen: at("127.0.0.1", treeLoDstPort), DataListen: at("127.0.0.1", treeLoDstPort+1), Extra: serve})
	links := []treeLink{
		{Name: "netns", ClientNS: p.NS1, Src: src, Dst: dst, Host: p.IP2, Single: single,
			SingleNote: fmt.Sprintf("single file: row 1's %s copy into a tmpfs root (daemon time, request to commit)", size(plan.Size))},
		{Name: "loopback", ClientNS: p.NS2, Src: loSrc, Dst: loDst, Host: "127.0.0.1"},
	}
	var singles []float64
	for range plan.Rounds {
		secs, _ := copySeconds(t, p.NS2, loSrc.At("/"+singleName), loDst.At("/single.bin"))
		singles = append(singles, gbps(plan.Size, secs))
		os.Remove(filepath.Join(root, "single.bin"))
	}
	links[1].Single = best(singles)
	links[1].SingleNote = fmt.Sprintf("single file: %s copied the same way on this loopback, best of %d (daemon time, request to commit, as row 1)", size(plan.Size), plan.Rounds)

	// Tree 3h: the mixed tree into a tmpfs with large folios (as row 1h).
	hugeRoot, hugeErr := mountHugeTmpfs(t, tp.MixedBytes+tp.MixedMax+256<<20)
	var huge *daemon
	if hugeErr == nil {
		huge = startDaemon(t, daemonConfig{NS: p.NS2, ID: "bench-tree-huge", Root: hugeRoot,
			Listen: at(p.IP2, treeHugePort), DataListen: at(p.IP2, treeHugePort+1), Extra: serve})
	}

	var tools treeTools
	if !have("rsync") {
		tools.RsyncSkip = "rsync is not installed (make deps-bench)"
	} else {
		// One daemon in NS2 serves both links: no --address, so the veth's and lo's.
		tools.RsyncErr = startTreeRsyncd(t, p.NS2, p.NS1, p.IP2, root, hugeRoot)
	}
	if !have("nc") || !have("tar") || !have("ss") {
		tools.TarSkip = "nc (netcat-openbsd), tar or ss is not installed (make deps-bench)"
	}

	var rows []benchRow
	for _, l := range links {
		for i, tr := range trees {
			res := measureTree(t, l, p, tr.tr, root, plan.Rounds, tools)
			rows = append(rows, treeRows(i+1, tr.desc, l, tr.tr, res, tr.rsyncWant, tr.singleWant, tools, broken)...)
		}
	}
	rows = append(rows, treeHugeRow(t, p, links[0], huge, hugeRoot, hugeErr, mixed, trees[2].desc, plan.Rounds, tools, broken))
	for _, tr := range trees {
		os.RemoveAll(tr.tr.Dir)
	}
	return rows
}

// mountHugeTmpfs mounts a tmpfs of size bytes with huge=within_size for
// the test, or says why it cannot.
func mountHugeTmpfs(t *testing.T, size int64) (string, error) {
	root := t.TempDir()
	if out, err := system("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,huge=within_size", size), "rxfer-bench-tree-huge", root); err != nil {
		return "", fmt.Errorf("cannot mount a tmpfs with huge=within_size: %v: %s", err, out)
	}
	t.Cleanup(func() { // registered before the daemon's: runs after it stopped
		if out, err := system("umount", root); err != nil {
			t.Errorf("umount %s: %v: %s", root, err, out)
		}
	})
	return root, nil
}

// treeHugeRow is tree 3 across the veth into a tmpfs mounted
// huge=within_size, rxfer and rsync each into it, reported next to tree
// 3: into a default tmpfs the destination spends about a third of its CPU
// allocating 4 KiB pages (as row 1), which large folios mostly save.
func treeHugeRow(t *testing.T, p netnsPair, l treeLink, huge *daemon, hugeRoot string, hugeErr error, tr *benchTree, desc string, rounds int,
	tools treeTools, broken func(string, string, error) benchRow) benchRow {
	metric := fmt.Sprintf("tree 3h. %s, into a tmpfs root mounted huge=within_size, %s: rxfer cp -r vs rsync daemon --whole-file", desc, l.Name)
	if hugeErr != nil {
		return skipRow(metric, "reported", hugeErr.Error())
	}
	l.Dst, l.Module = huge, "treeh"
	tools.TarSkip = "not run for 3h"
	res := measureTree(t, l, p, tr, hugeRoot, rounds, tools)
	note := fmt.Sprintf("%d files, %s; best of %d (a fresh mount's first copy assembles its huge pages): rxfer %.3f s, rsync %.3f s; tree 3's rows are the same copies into a default tmpfs (4 KiB pages)",
		tr.Files, size(tr.Bytes), rounds, minOr(res.RxSecs), minOr(res.RsyncSecs))
	return treeRow(metric, 0, res, res.Rsync, "rsync", res.RsyncErr, tools.RsyncSkip, note, broken)
}

// minOr is the least of v, or 0 for none.
func minOr(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return slices.Min(v)
}

// The tree generators are deterministic and exact, verifyTree catches each
// way a copy can be wrong, and a failed rxfer copy is a FAIL row carrying
// its error (not a crash of the table). No root, no network: it runs in
// every `go test ./...`, where TestBenchTableSmoke adds the rows themselves.
func TestBenchTreeVerify(t *testing.T) {
	t.Parallel()
	const total, lo, hi = 3 << 20, 1 << 10, 512 << 10
	sizes := logUniformSizes(total, lo, hi, 3)
	var sum int64
	for _, n := range sizes {
		if n < lo || n > hi {
			t.Errorf("size %d outside [%d, %d]", n, lo, hi)
		}
		sum += n
	}
	if sum != total || !slices.Equal(sizes, logUniformSizes(total, lo, hi, 3)) || slices.Equal(sizes, logUniformSizes(total, lo, hi, 4)) {
		t.Fatalf("log-uniform sizes add up to %d (want %d) or do not depend on the seed alone: %v", sum, total, sizes)
	}
	const dirs = 3
	src := filepath.Join(t.TempDir(), "tree")
	tr, err := writeTree(src, sizes, dirs, 7)
	if err != nil {
		t.Fatal(err)
	}
	same, err := writeTree(filepath.Join(t.TempDir(), "tree"), sizes, dirs, 7)
	if err != nil {
		t.Fatal(err)
	}
	other, err := writeTree(filepath.Join(t.TempDir(), "tree"), sizes, dirs, 8)
	if err != nil {
		t.Fatal(err)
	}
	rel := func(i int) string { return filepath.Join(fmt.Sprintf("d%03d", i%dirs), fmt.Sprintf("f%06d.bin", i)) }
	last, largest := rel(len(sizes)-1), rel(slices.Index(sizes, slices.Max(sizes)))
	if tr.Files != len(sizes) || tr.Bytes != total || !maps.Equal(tr.Sample, same.Sample) || maps.Equal(tr.Sample, other.Sample) {
		t.Fatalf("tree %d files, %d bytes; same seed same content %v, other seed other content %v",
			tr.Files, tr.Bytes, maps.Equal(tr.Sample, same.Sample), !maps.Equal(tr.Sample, other.Sample))
	}
	if _, ok := tr.Sample[last]; !ok {
		t.Errorf("sample %v lacks the last file %s", slices.Collect(maps.Keys(tr.Sample)), last)
	}
	if _, ok := tr.Sample[largest]; !ok {
		t.Errorf("sample lacks the largest file %s", largest)
	}
	unsampled, unsampledSize := "", int64(0)
	for i := range sizes {
		if _, ok := tr.Sample[rel(i)]; !ok {
			unsampled, unsampledSize = rel(i), sizes[i]
			break
		}
	}
	if unsampled == "" {
		t.Fatalf("every one of %d files is sampled: the test needs a tree larger than the sample", len(sizes))
	}

	copyOf := func() string {
		dst := filepath.Join(t.TempDir(), "tree")
		if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	if err := verifyTree(tr, copyOf()); err != nil {
		t.Fatalf("a faithful copy: %v", err)
	}
	for _, c := range []struct {
		name    string
		breakIt func(dst string) error
		want    string
	}{
		{"missing file", func(dst string) error { return os.Remove(filepath.Join(dst, unsampled)) }, fmt.Sprintf("holds %d files", len(sizes)-1)},
		{"short file", func(dst string) error { return os.Truncate(filepath.Join(dst, unsampled), unsampledSize-1) }, fmt.Sprintf("of %d bytes in all", total-1)},
		{"changed byte", func(dst string) error {
			f, err := os.OpenFile(filepath.Join(dst, largest), os.O_RDWR, 0)
			if err != nil {
				return err
			}
			b := make([]byte, 1)
			_, err = f.ReadAt(b, 100)
			b[0] ^= 1
			_, err2 := f.WriteAt(b, 100)
			return errors.Join(err, err2, f.Close())
		}, largest + " differs from its source"},
		{"extra entry", func(dst string) error { return os.Symlink("d000", filepath.Join(dst, "link")) }, "is not a regular file"},
		{"no copy", func(dst string) error { return os.RemoveAll(dst) }, "no such file"},
	} {
		dst := copyOf()
		if err := c.breakIt(dst); err != nil {
			t.Fatal(err)
		}
		if err := verifyTree(tr, dst); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: verifyTree = %v, want an error containing %q", c.name, err, c.want)
		}
	}

	var brokenRows []string
	broken := func(metric, target string, err error) benchRow {
		brokenRows = append(brokenRows, metric)
		return skipRow(metric, target, err.Error())
	}
	failed := treeResult{RxErr: errors.New("rxfer cp -r exited 2: flag provided but not defined: -r"), Rsync: []float64{0.5}}
	r := treeRow("tree 1. x", 1, failed, failed.Rsync, "rsync", nil, "", "n", broken)
	if r.Status != statusFail || r.Unit == "" || !strings.Contains(r.Note, "flag provided but not defined: -r") || !strings.Contains(r.Note, "rsync 0.500 GB/s") {
		t.Errorf("a failed rxfer copy gives row %+v, want FAIL with its error and the baseline's rate", r)
	}
	ok := treeResult{Rx: []float64{0.2, 0.4}, Rsync: []float64{0.5}}
	if r := treeRow("tree 1. x", 1, ok, ok.Rsync, "rsync", nil, "", "n", broken); r.Status != statusFail || r.Ratio != 0.4/0.5 {
		t.Errorf("0.4 vs 0.5 GB/s at >= 1.0x: %+v", r)
	}
	if r := treeRow("tree 3. x", 0.7, ok, ok.Rsync, "rsync", nil, "", "n", broken); r.Status != statusPass {
		t.Errorf("0.4 vs 0.5 GB/s at >= 0.7x: %+v", r)
	}
	if r := treeRow("tree 1. x", 1, ok, nil, "tar | nc", nil, "nc is not installed", "n", broken); r.Status != statusSkip {
		t.Errorf("a baseline that is not installed: %+v", r)
	}
	if r := treeRow("tree 1. x", 1, ok, nil, "rsync", errors.New("rsync: exit 5"), "", "n", broken); r.Status != statusSkip || len(brokenRows) != 1 {
		t.Errorf("a baseline that failed is a broken measurement: %+v, broken %q", r, brokenRows)
	}
}

// checkTreeRows is TestBenchTableSmoke's check of the tree rows: each tree
// on each link against each baseline, and every installed baseline
// measured (its rate in the row, or in the note of a row whose rxfer copy
// failed), which means its copies passed verifyTree.
func checkTreeRows(t *testing.T, rows []benchRow) {
	t.Helper()
	installed := func(tools ...string) bool {
		for _, tool := range tools {
			if _, err := exec.LookPath(tool); err != nil {
				return false
			}
		}
		return true
	}
	baselines := []struct {
		vs, name  string
		installed bool
	}{
		{"rsync daemon --whole-file", "rsync", installed("rsync")},
		{"tar | nc", "tar | nc", installed("tar", "nc", "ss")},
		{"the single-file copy", "single file", true},
	}
	for num := 1; num <= 3; num++ {
		for _, link := range []string{"netns", "loopback"} {
			for _, b := range baselines {
				if b.vs == "the single-file copy" && num != 2 {
					continue
				}
				i := slices.IndexFunc(rows, func(r benchRow) bool {
					return strings.HasPrefix(r.Metric, fmt.Sprintf("tree %d. ", num)) && strings.HasSuffix(r.Metric, ", "+link+": rxfer cp -r vs "+b.vs)
				})
				if i < 0 {
					t.Errorf("no row for tree %d on %s vs %s", num, link, b.vs)
					continue
				}
				r := rows[i]
				measured := r.BaselineName == b.name && r.Baseline > 0 ||
					r.Status == statusFail && strings.Contains(r.Note, "rxfer copy failed: ") && strings.Contains(r.Note, b.name+" ") && strings.Contains(r.Note, " GB/s; ")
				if b.installed && !measured {
					t.Errorf("tree %d on %s: %s is installed but the row has no verified measurement of it: %+v", num, link, b.name, r)
				}
			}
		}
	}
}
