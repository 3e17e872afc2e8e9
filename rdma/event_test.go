package rdma

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rxfer/rxfer/internal/testbedenv"
)

// TestPortDownBreaksEndpoints takes the port down under an idle, connected
// pair: nothing is in flight, so only the endpoints' async-event watchers can
// notice. Both must break (Lost names the event), and a Send must fail with
// ErrBroken naming the event.
func TestPortDownBreaksEndpoints(t *testing.T) {
	requireDevice(t)
	const chunkSize = 1 << 20
	p := newPair(t, 4, chunkSize)
	src, _, chunks := sourceFile(t, t.TempDir(), 2*chunkSize, chunkSize, 5)
	testbedenv.TakePortDown(t, testbedenv.Device)
	for name, ep := range map[string]*endpoint{"sender": p.s.ep, "receiver": p.r.ep} {
		select {
		case <-ep.lostC:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no IBV_EVENT_PORT_ERR seen 30 s after the port went down", name)
		}
		if err := ep.lostErr(); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "IBV_EVENT_PORT_ERR") {
			t.Errorf("%s: lost %v, want ErrBroken naming IBV_EVENT_PORT_ERR", name, err)
		}
	}
	if err := p.s.Lost(); err == nil {
		t.Error("Sender.Lost is nil after the port went down")
	}
	start := time.Now()
	res := runSend(t, p.s, Source{File: src}, chunks, 0, nil)
	if !errors.Is(res.err, ErrBroken) || !strings.Contains(res.err.Error(), "IBV_EVENT_PORT_ERR") {
		t.Errorf("Send on the broken connection: %v, want ErrBroken naming IBV_EVENT_PORT_ERR", res.err)
	}
	t.Logf("Send failed after %v: %v", time.Since(start).Round(time.Millisecond), res.err)
}
