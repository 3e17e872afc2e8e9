package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"time"
)

// serveDebug serves net/http/pprof on addr, which must be a loopback
// address: profiles and goroutine dumps name files and peers, so they never
// leave the host. It returns a function that stops the server. `make bench`
// reads goroutine counts from it; operators may profile a live daemon.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usagef("--debug-addr %q: want HOST:PORT on loopback, such as 127.0.0.1:6060", addr)
	}
	if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.Unmap().IsLoopback()) {
		return nil, usagef("--debug-addr %q is not a loopback address: the debug endpoint exposes goroutine dumps, so it only listens on 127.0.0.1 or ::1", addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	log.Info("debug endpoint (net/http/pprof) listening", "addr", lis.Addr().String())
	return func() { srv.Close(); <-done }, nil
}
