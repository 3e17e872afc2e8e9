package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// addDebugFlag registers serve's --debug-addr: an opt-in net/http/pprof
// endpoint for profiling a daemon (CPU, block, mutex profiles and
// execution traces), to find where a copy's time goes.
func addDebugFlag(fs *flag.FlagSet) *string {
	return fs.String("debug-addr", "", "serve net/http/pprof on this loopback HOST:PORT (profiles and traces; off when empty; loopback only, it has no authentication)")
}

// startDebug serves pprof on addr when it is set. It refuses a non-loopback
// address: the profiles show paths and timings to whoever asks. The block
// and mutex profiles are enabled only here, so a daemon without the flag
// pays nothing for them.
func startDebug(addr string, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" || !loopback(addr) {
		return nil, usagef("--debug-addr %q: want a loopback HOST:PORT such as 127.0.0.1:6060 (the endpoint has no authentication)", addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	runtime.SetBlockProfileRate(int(time.Microsecond)) // blocking events of 1 µs and more
	runtime.SetMutexProfileFraction(100)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug endpoint stopped", "err", err)
		}
	}()
	log.Info("debug endpoint (net/http/pprof) listening", "addr", lis.Addr().String())
	return func() {
		srv.Close()
		runtime.SetBlockProfileRate(0)
		runtime.SetMutexProfileFraction(0)
	}, nil
}
