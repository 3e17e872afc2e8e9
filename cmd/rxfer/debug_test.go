package main

import (
	"log/slog"
	"testing"
)

// TestDebugAddrLoopbackOnly: --debug-addr refuses any address but a loopback
// one (pprof has no authentication), and serves on a loopback one.
func TestDebugAddrLoopbackOnly(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:6060", "[::]:0", "example.com:6060"} {
		if stop, err := startDebug(addr, log); err == nil {
			stop()
			t.Errorf("startDebug(%q) served; want it refused", addr)
		}
	}
	stop, err := startDebug("127.0.0.1:0", log)
	if err != nil {
		t.Fatalf("startDebug on loopback: %v", err)
	}
	stop()
}
