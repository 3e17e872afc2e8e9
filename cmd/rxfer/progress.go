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
	// attempt says which attempt the next events belong to (--retries).
	attempt(n int)
	// retry says that attempt n failed with cause and the next one starts
	// after wait.
	retry(n int, cause string, wait time.Duration)
	// done ends the display; the final event (if any) was already shown.
	done()
}

// attempts is the part of a reporter that tracks --retries: the current
// attempt, and the last event seen (a retry names its transfer).
type attempts struct {
	n    int
	last *pb.TransferInfo
}

func (a *attempts) attempt(n int) { a.n = n }

// stamp marks e with the current attempt and remembers it.
func (a *attempts) stamp(e *pb.TransferInfo) {
	e.Attempt = int32(a.n)
	a.last = e
}

// failed is the event that ends a failed attempt: its last event, FAILED
// with the cause.
func (a *attempts) failed(cause string) *pb.TransferInfo {
	e := &pb.TransferInfo{State: pb.State_STATE_FAILED, Attempt: int32(a.n), Error: cause}
	if a.last != nil {
		e.TransferId, e.SourcePath, e.DestNode, e.DestPath = a.last.TransferId, a.last.SourcePath, a.last.DestNode, a.last.DestPath
		e.BytesDone, e.BytesTotal, e.ResumedBytes, e.Transport = a.last.BytesDone, a.last.BytesTotal, a.last.ResumedBytes, a.last.Transport
	}
	return e
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

// jsonReporter prints every event as one line of protobuf JSON; a failed
// attempt that is retried ends with a FAILED event naming the cause.
type jsonReporter struct {
	out io.Writer
	attempts
}

func (r *jsonReporter) event(e *pb.TransferInfo) {
	r.stamp(e)
	b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(e)
	fmt.Fprintf(r.out, "%s\n", b)
}

func (r *jsonReporter) retry(n int, cause string, wait time.Duration) {
	r.event(r.failed(fmt.Sprintf("%s; retrying in %v (attempt %d resumes)", cause, wait, n+1)))
}

func (r *jsonReporter) done() {}

// lineReporter prints state changes and progress at every tenth of the way.
type lineReporter struct {
	out       io.Writer
	lastState pb.State
	lastTenth int64
	attempts
	treeReport
}

func (r *lineReporter) retry(n int, cause string, wait time.Duration) {
	fmt.Fprintf(r.out, "attempt %d failed: %s; retrying in %v\n", n, cause, wait)
	r.lastState, r.lastTenth = 0, 0
}

func (r *lineReporter) event(e *pb.TransferInfo) {
	r.stamp(e)
	if e.State != r.lastState {
		r.lastState = e.State
		note := ""
		if e.State == pb.State_STATE_MOVING {
			note = transportNote(e) + resumeNote(e)
		}
		fmt.Fprintf(r.out, "%s: %s%s\n", e.TransferId, stateName(e.State), note)
	}
	r.warn(r.out, e)
	if e.State == pb.State_STATE_MOVING && e.BytesTotal > 0 {
		if tenth := e.BytesDone * 10 / e.BytesTotal; tenth > r.lastTenth {
			r.lastTenth = tenth
			fmt.Fprintf(r.out, "%s: %3d%% %s%s of %s, %s/s\n", e.TransferId, tenth*10, r.files(e),
				size(e.BytesDone), size(e.BytesTotal), size(int64(e.RateBytesPerSec)))
		}
	}
	if e.State == pb.State_STATE_COMMITTED {
		fmt.Fprintln(r.out, r.summary(e))
	}
}

func (r *lineReporter) done() {}

// barReporter draws a progress bar with rate and ETA on the terminal.
type barReporter struct {
	out, errOut io.Writer
	p           *mpb.Progress
	bar         *mpb.Bar
	final       *pb.TransferInfo
	attempts
	treeReport
}

func (r *barReporter) retry(n int, cause string, wait time.Duration) {
	if r.bar != nil {
		r.bar.Abort(false)
		r.p.Wait()
		r.bar, r.p = nil, nil
	}
	fmt.Fprintf(r.errOut, "attempt %d failed: %s; retrying in %v\n", n, cause, wait)
}

func (r *barReporter) event(e *pb.TransferInfo) {
	r.stamp(e)
	r.warn(r.errOut, e)
	if r.bar == nil && e.State == pb.State_STATE_MOVING {
		if note := resumeNote(e); note != "" {
			fmt.Fprintln(r.errOut, strings.TrimPrefix(note, "; "))
		}
	}
	if r.bar == nil && e.BytesTotal >= 0 && e.State >= pb.State_STATE_MOVING {
		r.p = mpb.New(mpb.WithOutput(r.errOut), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
		r.bar = r.p.AddBar(e.BytesTotal,
			mpb.PrependDecorators(decor.Name(e.DestPath+" ", decor.WCSyncSpaceR), decor.Any(r.barFiles), decor.CountersKibiByte("% .1f / % .1f")),
			mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.Name(" "),
				decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace), decor.Name(" ETA "),
				decor.AverageETA(decor.ET_STYLE_GO)))
	}
	if r.bar != nil {
		r.tree.Store(e.Tree)
		r.filesDone.Store(e.FilesDone)
		r.filesTotal.Store(e.FilesTotal)
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
		fmt.Fprintln(r.out, r.summary(r.final))
	}
}

// summary is the one line printed after a committed copy.
func summary(e *pb.TransferInfo) string {
	res := e.GetResult()
	secs := res.GetSeconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(e.BytesTotal-e.ResumedBytes) / secs // what moved
	}
	resumed := ""
	if e.ResumedBytes > 0 {
		resumed = fmt.Sprintf(" (%s resumed)", size(e.ResumedBytes))
	}
	return fmt.Sprintf("copied %s%s in %.2fs (%s/s) over %s, crc32c %08x, to %s",
		size(e.BytesTotal), resumed, secs, size(int64(rate)), transportName(e.Transport), res.GetCrc32C(), res.GetFinalPath())
}

// resumeNote says what a copy resumed, or why it started over.
func resumeNote(e *pb.TransferInfo) string {
	s := ""
	if e.ResumedBytes > 0 {
		s = fmt.Sprintf("; resuming: %s of %s already at the destination", size(e.ResumedBytes), size(e.BytesTotal))
	}
	if e.ResumeNote != "" {
		if e.ResumedBytes == 0 {
			s = "; starting over: " + e.ResumeNote
		} else {
			s += " (" + e.ResumeNote + ")"
		}
	}
	return s
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
