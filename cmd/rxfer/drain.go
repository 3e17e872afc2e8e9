package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rxfer/rxfer/service"
	"github.com/rxfer/rxfer/transfer"
)

// DefaultDrainTimeout is how long a stopping daemon lets running transfers finish.
const DefaultDrainTimeout = 30 * time.Second

// abortWait bounds how long a daemon waits, after cancelling what the drain
// left, for its sources to tell their destinations (partial files kept).
const abortWait = 15 * time.Second

// gracePeriod bounds how long a drained daemon waits for calls in flight
// (the replies to its last transfers' calls) before it closes connections.
const gracePeriod = 5 * time.Second

// logFlags are serve's --log-format and --log-level.
type logFlags struct{ format, level *string }

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		format: fs.String("log-format", "text", "log format on stderr: text (key=value) or json (one object a line)"),
		level:  fs.String("log-level", "info", "least severe level logged: debug, info, warn or error"),
	}
}

// logger builds the daemon's logger on w from the flags.
func (f logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*f.level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", *f.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(*f.format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", *f.format)
}

// serveUntilSignalled runs serve until the server stops, handling SIGTERM
// and SIGINT as a graceful drain: the first marks the node NOT_SERVING,
// refuses new transfers (Unavailable) and lets running ones finish for up
// to drain; what is left then is cancelled, keeping resumable partial
// files. A second signal stops at once. It returns serve's error.
func serveUntilSignalled(serve func() error, srv *service.Server, node *transfer.Node, drain time.Duration, log *slog.Logger) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- serve() }()
	var sig os.Signal
	select {
	case err := <-served:
		node.Shutdown()
		return err
	case sig = <-sigs:
	}
	stopped := make(chan struct{})
	defer func() { <-stopped }()
	go func() {
		defer close(stopped)
		drainNode(srv, node, drain, sig, sigs, log)
		// Replies to calls that ended the last transfers (a Commit) still
		// go out; watchers (health Watch streams) do not hold the stop up.
		srv.GracefulStop(gracePeriod)
	}()
	err := <-served
	return err
}

// drainNode is the drain itself; it returns when the node may stop.
func drainNode(srv *service.Server, node *transfer.Node, drain time.Duration, sig os.Signal, sigs <-chan os.Signal, log *slog.Logger) {
	log.Info("draining: refusing new transfers, letting running ones finish (signal again to stop at once)",
		"signal", sig.String(), "active", node.Active(), "drain_timeout", drain)
	srv.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	go func() {
		select {
		case s := <-sigs:
			log.Warn("second signal: stopping at once", "signal", s.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := node.Drain(ctx); err == nil {
		log.Info("drained: no transfer running; stopping")
		node.Shutdown()
		return
	}
	hurry := context.Cause(ctx) == context.Canceled // the second signal, not the timeout
	log.Warn("drain timeout: cancelling the transfers still running (partial files are kept for a resume)",
		"active", node.Active(), "after", drain, "second_signal", hurry)
	node.Shutdown()
	if hurry {
		return
	}
	// The sources tell their destinations, which keep the partial files.
	actx, acancel := context.WithTimeout(context.Background(), abortWait)
	defer acancel()
	if err := node.Drain(actx); err != nil {
		log.Warn(fmt.Sprintf("transfers still ending after %v; stopping anyway", abortWait), "active", node.Active())
	}
}
