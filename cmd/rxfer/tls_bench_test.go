package main

import "testing"

// TestBenchControlTLS runs the control-plane row of `rxfer bench` for a few
// copies: both modes copy, over one client connection and a new one each, through the gRPC API (mTLS with real
// certificates) and report positive medians. It judges no timing.
func TestBenchControlTLS(t *testing.T) {
	r, err := benchControlTLS(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Copies != 3 || r.PlainMs <= 0 || r.MTLSMs <= 0 || r.NewConnPlainMs <= 0 || r.NewConnMTLSMs <= 0 {
		t.Fatalf("result %+v", r)
	}
	t.Logf("%+v", r)
}
