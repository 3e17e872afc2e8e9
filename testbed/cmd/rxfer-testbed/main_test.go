package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestShellQuoteRoundTrips(t *testing.T) {
	args := []string{"plain", "with space", "it's", `"double"`, "$HOME", "", "a\nb", `back\slash`}
	// The shell must see exactly args after evaluating the quoted line.
	out, err := exec.Command("sh", "-c", `eval "set -- $1"; for a in "$@"; do printf '%s\0' "$a"; done`,
		"sh", shellQuote(args)).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if strings.Join(got, "|") != strings.Join(args, "|") {
		t.Fatalf("shell saw %q; want %q", got, args)
	}
}

func TestWriteScriptExportsTheTestbedEnvironment(t *testing.T) {
	dir := t.TempDir()
	cfg := config{vms: 2, dir: "/work/x y", testbed: "/repo/testbed", mtu: 9000, selfcheck: true,
		env: []string{"FOO=a 'b'"}}
	path, err := writeScript(cfg, dir, 1, shellQuote([]string{"echo", "hi"}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{"export RXFER_TESTBED='1'", "export RXFER_VM_INDEX='1'", "export RXFER_VM_COUNT='2'",
		"export RXFER_VM_IP='10.77.0.2'", "export RXFER_PEER_IP='10.77.0.1'", "export RXFER_SELFCHECK='1'",
		`export FOO='a '\''b'\'''`, ". '/repo/testbed/guest/setup.sh'", "cd '/work/x y' || exit 125", "'echo' 'hi'"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if filepath.Dir(path) != dir {
		t.Errorf("script written to %s, not the run directory", path)
	}
	if _, err := writeScript(config{vms: 1, env: []string{"NOEQUALS"}}, dir, 0, "true"); err == nil {
		t.Errorf("an -e without '=' was accepted")
	}
}
