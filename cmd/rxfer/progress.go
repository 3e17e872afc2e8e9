package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// reporter shows a copy's progress events: a live bar on a terminal, plain
// lines otherwise, or one JSON object per line with --json.
type reporter interface {
	event(*pb.TransferInfo)
	// done ends the display; the final event (if any) was already shown.
	done()
}

func newReporter(out, errOut io.Writer, json, tty bool) reporter {
	switch {
	case json:
		return &jsonReporter{out: out}
	case tty:
		return &barReporter{out: out, errOut: errOut}
	}
	return &lineReporter{out: out}
}

// jsonReporter prints every event as one line of protobuf JSON.
type jsonReporter struct{ out io.Writer }

func (r *jsonReporter) event(e *pb.TransferInfo) {
	b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(e)
	fmt.Fprintf(r.out, "%s\n", b)
}

func (r *jsonReporter) done() {}

// lineReporter prints state changes and progress at every tenth of the way.
type lineReporter struct {
	out       io.Writer
	lastState pb.State
	lastTenth int64
}

func (r *lineReporter) event(e *pb.TransferInfo) {
	if e.State != r.lastState {
		r.lastState = e.State
		note := ""
		if e.State == pb.State_STATE_MOVING {
			note = transportNote(e)
		}
		fmt.Fprintf(r.out, "%s: %s%s\n", e.TransferId, stateName(e.State), note)
	}
	if e.State == pb.State_STATE_MOVING && e.BytesTotal > 0 {
		if tenth := e.BytesDone * 10 / e.BytesTotal; tenth > r.lastTenth {
			r.lastTenth = tenth
			fmt.Fprintf(r.out, "%s: %3d%% %s of %s, %s/s\n", e.TransferId, tenth*10,
				size(e.BytesDone), size(e.BytesTotal), size(int64(e.RateBytesPerSec)))
		}
	}
	if e.State == pb.State_STATE_COMMITTED {
		fmt.Fprintln(r.out, summary(e))
	}
}

func (r *lineReporter) done() {}

// barReporter draws a progress bar with rate and ETA on the terminal.
type barReporter struct {
	out, errOut io.Writer
	p           *mpb.Progress
	bar         *mpb.Bar
	final       *pb.TransferInfo
}

func (r *barReporter) event(e *pb.TransferInfo) {
	if r.bar == nil && e.BytesTotal >= 0 && e.State >= pb.State_STATE_MOVING {
		r.p = mpb.New(mpb.WithOutput(r.errOut), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
		r.bar = r.p.AddBar(e.BytesTotal,
			mpb.PrependDecorators(decor.Name(e.DestPath+" ", decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Name(" "),
				decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace), decor.Name(" ETA "),
				decor.AverageETA(decor.ET_STYLE_GO)))
	}
	if r.bar != nil {
		r.bar.SetCurrent(e.BytesDone)
	}
	if e.State.Number() >= pb.State_STATE_COMMITTED.Number() {
		r.final = e
	}
}

func (r *barReporter) done() {
	if r.bar != nil {
		if r.final != nil && r.final.State == pb.State_STATE_COMMITTED {
			r.bar.SetTotal(-1, true)
		} else {
			r.bar.Abort(false)
		}
		r.p.Wait()
	}
	if r.final != nil && r.final.State == pb.State_STATE_COMMITTED {
		fmt.Fprintln(r.out, summary(r.final))
	}
}

// summary is the one line printed after a committed copy.
func summary(e *pb.TransferInfo) string {
	res := e.GetResult()
	secs := res.GetSeconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(e.BytesTotal) / secs
	}
	return fmt.Sprintf("copied %s in %.2fs (%s/s) over %s, crc32c %08x, to %s",
		size(e.BytesTotal), secs, size(int64(rate)), transportName(e.Transport), res.GetCrc32C(), res.GetFinalPath())
}

func transportNote(e *pb.TransferInfo) string {
	if e.Transport == pb.Transport_TRANSPORT_UNSPECIFIED {
		return ""
	}
	s := " over " + transportName(e.Transport)
	if e.FallbackReason != "" {
		s += " (RDMA not used: " + e.FallbackReason + ")"
	}
	return s
}

// stateName is the state's enum name without its prefix, e.g. "moving".
func stateName(s pb.State) string { return strings.ToLower(strings.TrimPrefix(s.String(), "STATE_")) }

// transportName is "tcp" or "rdma" ("-" when none was chosen yet).
func transportName(t pb.Transport) string {
	if t == pb.Transport_TRANSPORT_UNSPECIFIED {
		return "-"
	}
	return strings.ToLower(strings.TrimPrefix(t.String(), "TRANSPORT_"))
}

// size formats a byte count with binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
