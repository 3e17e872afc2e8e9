package testbedenv

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// gate records what RequireRDMA did to a test instead of ending it.
type gate struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (g *gate) Helper() {}

func (g *gate) Skipf(format string, args ...any) {
	g.skipped, g.msg = true, fmt.Sprintf(format, args...)
}

func (g *gate) Fatalf(format string, args ...any) {
	g.failed, g.msg = true, fmt.Sprintf(format, args...)
}

func TestRequireRDMA(t *testing.T) {
	noDevice := errors.New("no RDMA device")
	for _, tc := range []struct {
		name               string
		testbed            string
		probe              error
		wantSkip, wantFail bool
	}{
		{"host with RDMA", "", nil, false, false},
		{"testbed with RDMA", "1", nil, false, false},
		{"host without RDMA", "", noDevice, true, false},
		{"testbed without RDMA", "1", noDevice, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("RXFER_TESTBED", tc.testbed)
			g := &gate{TB: t}
			RequireRDMA(g, tc.probe)
			if g.skipped != tc.wantSkip || g.failed != tc.wantFail {
				t.Fatalf("skipped %v, failed %v (%q); want skipped %v, failed %v", g.skipped, g.failed, g.msg, tc.wantSkip, tc.wantFail)
			}
			if tc.probe != nil && !strings.Contains(g.msg, tc.probe.Error()) {
				t.Errorf("message %q does not give the probe's reason %q", g.msg, tc.probe)
			}
		})
	}
}
