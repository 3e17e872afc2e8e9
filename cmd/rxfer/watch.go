package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

// watchInterval is how often `rxfer status --watch` redraws.
const watchInterval = time.Second

// cmdStatusArgs splits --watch off status's arguments.
func cmdStatusArgs(args []string) (rest []string, watch bool) {
	for _, a := range args {
		if a == "--watch" || a == "-watch" || a == "-w" {
			watch = true
			continue
		}
		rest = append(rest, a)
	}
	return rest, watch
}

// watchStatus is `rxfer status --watch`: like top for transfers, the node
// and its transports on top and a progress bar per active transfer with
// its rate and ETA, redrawn once a second until interrupted. Without a
// terminal on stdout it prints one snapshot, as `rxfer status`.
func watchStatus(ctx context.Context, client pb.TransferClient, rest []string) error {
	if !term.IsTerminal(int(os.Stdout.Fd())) {
		return showStatus(ctx, client, rest)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	w := &watcher{client: client, bars: make(map[string]*mpb.Bar), rates: make(map[string]float64)}
	w.p = mpb.NewWithContext(ctx, mpb.WithOutput(os.Stdout), mpb.WithWidth(30), mpb.WithRefreshRate(watchInterval/4))
	if _, err := w.p.Add(0, mpb.BarFillerFunc(func(out io.Writer, _ decor.Statistics) error {
		_, err := io.WriteString(out, w.headerText())
		return err
	}), mpb.BarPriority(-1)); err != nil { // the header stays on top
		return err
	}
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		if err := w.poll(ctx); err != nil && ctx.Err() == nil {
			w.setHeader("error: " + describe(err))
		}
		select {
		case <-ctx.Done():
			w.p.Shutdown()
			return nil
		case <-t.C:
		}
	}
}

// watcher keeps the bars of the transfers it saw active.
type watcher struct {
	client pb.TransferClient
	p      *mpb.Progress
	mu     sync.Mutex
	header string
	bars   map[string]*mpb.Bar // by direction and id
	rates  map[string]float64  // by direction and id; under mu (read while drawing)
}

func (w *watcher) headerText() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.header
}

func (w *watcher) setHeader(s string) {
	w.mu.Lock()
	w.header = s
	w.mu.Unlock()
}

// poll asks the node once and updates the header and the bars.
func (w *watcher) poll(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	info, err := w.client.GetNodeInfo(ctx, &pb.GetNodeInfoRequest{})
	if err != nil {
		return err
	}
	list, err := w.client.ListTransfers(ctx, &pb.ListTransfersRequest{})
	if err != nil {
		return err
	}
	var h strings.Builder
	fmt.Fprintf(&h, "node %s (rxfer %s), %d active of %d, %s", info.NodeId, info.Version, info.ActiveTransfers,
		info.MaxConcurrentTransfers, time.Now().Format(time.TimeOnly))
	for _, t := range info.Transports {
		state := "up"
		if !t.Available {
			state = "down"
		}
		fmt.Fprintf(&h, " | %s %s", transportName(t.Transport), state)
	}
	w.setHeader(h.String())
	seen := make(map[string]bool)
	for _, t := range list.Transfers {
		if t.State.Number() >= pb.State_STATE_COMMITTED.Number() || t.State == pb.State_STATE_UNSPECIFIED {
			continue
		}
		key := t.Direction.String() + "/" + t.TransferId
		seen[key] = true
		w.mu.Lock()
		w.rates[key] = t.RateBytesPerSec
		w.mu.Unlock()
		bar := w.bars[key]
		if bar == nil {
			bar = w.addBar(key, t)
			w.bars[key] = bar
		}
		bar.SetCurrent(t.BytesDone)
	}
	for key, bar := range w.bars {
		if !seen[key] { // ended: its line goes
			bar.Abort(true)
			delete(w.bars, key)
			w.mu.Lock()
			delete(w.rates, key)
			w.mu.Unlock()
		}
	}
	return nil
}

// addBar adds the line of one transfer: id, direction, transport and
// destination, then bytes, percentage, the node's rate and the ETA.
func (w *watcher) addBar(key string, t *pb.TransferInfo) *mpb.Bar {
	dir := map[pb.Direction]string{pb.Direction_DIRECTION_OUTGOING: "out", pb.Direction_DIRECTION_INCOMING: "in"}[t.Direction]
	id := t.TransferId
	if len(id) > 8 {
		id = id[:8]
	}
	label := fmt.Sprintf("%s %-3s %-4s %s ", id, dir, transportName(t.Transport), t.DestPath)
	return w.p.AddBar(max(t.BytesTotal, 1),
		mpb.PrependDecorators(decor.Name(label, decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f")),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace),
			decor.Any(func(s decor.Statistics) string {
				r := w.rate(key)
				if r <= 0 {
					return "  -"
				}
				eta := time.Duration(float64(s.Total-s.Current) / r * float64(time.Second)).Round(time.Second)
				return fmt.Sprintf("  %s/s ETA %v", size(int64(r)), eta)
			}, decor.WCSyncSpace)))
}

// rate is the node's last reported rate of a transfer, in bytes per second.
func (w *watcher) rate(key string) float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rates[key]
}
