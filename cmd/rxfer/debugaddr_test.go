package main

import "testing"

// --debug-addr serves goroutine dumps, so it refuses anything but loopback.
func TestServeDebugAddrLoopbackOnly(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.0.0.1:0", "example.com:0", "nonsense"} {
		wantFailure(t, rxfer(t, "serve", "--root", t.TempDir(), "--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0", "--debug-addr", addr), 2, "--debug-addr")
	}
}
