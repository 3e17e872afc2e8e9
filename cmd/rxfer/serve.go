package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/rxfer/rxfer/internal/crc32c"
	"github.com/rxfer/rxfer/internal/metrics"

	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/rdma"
	"github.com/rxfer/rxfer/service"
	"github.com/rxfer/rxfer/transfer"
)

func cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	root := fs.String("root", "", "export root: every path a peer or client names is beneath it (required)")
	listen := fs.String("listen", "127.0.0.1:7470", "gRPC control address")
	dataListen := fs.String("data-listen", "127.0.0.1:7471", "TCP data-channel address")
	nodeID := fs.String("node-id", "", "node name (default: host name)")
	tokenFile := fs.String("token-file", "", "file holding a bearer token clients and peers must present")
	insecure := fs.Bool("insecure", false, "allow serving without a token on a non-loopback address (plaintext: anyone who reaches it can read and write the export root)")
	tlsFlags := addServeTLSFlags(fs)
	var peers []string
	fs.Func("peer", "control address HOST:PORT of a node this node may send its own token to (repeatable; any other destination needs the client's dest_token)", func(s string) error {
		if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
			return fmt.Errorf("want HOST:PORT, got %q", s)
		}
		peers = append(peers, s)
		return nil
	})
	maxTransfers := fs.Int("max-transfers", transfer.DefaultMaxConcurrent, "maximum concurrent transfers")
	maxRegistered := fs.Int64("max-registered", transfer.DefaultMaxRegistered, "maximum bytes of all memory regions")
	perClient := fs.Int("max-transfers-per-client", transfer.DefaultMaxTransfersPerClient, "maximum unfinished incoming transfers per client address (negative: no limit)")
	reservedPerClient := fs.Int64("max-reserved-per-client", transfer.DefaultMaxReservedPerClient, "maximum bytes of disk one client address may reserve with unfinished transfers (negative: no limit)")
	firstByte := fs.Duration("first-byte-timeout", transfer.DefaultFirstByteTimeout, "abort a prepared transfer that receives no data for this long")
	maxUnauth := fs.Int("max-unauthenticated-conns", fallback.DefaultMaxUnauthenticated, "maximum data connections that have not presented their token yet; more are refused at once")
	chunk := fs.Int64("chunk-size", transfer.DefaultChunkSize, "chunk size in bytes for files this node sends")
	streams := fs.Int("streams", fallback.DefaultStreams, "parallel TCP data streams for files this node sends")
	mode := fs.String("send-mode", fallback.DefaultMode.String(), "TCP sender: sendfile or readwrite")
	dataEnc := fs.String("data-encryption", "auto", "TCP data-channel encryption: auto (on across the network, off on loopback), on (TLS 1.3, kTLS where the kernel offers it) or off (none offered; headers still authenticated)")
	useKTLS := fs.Bool("ktls", true, "hand encrypted data connections' keys to the kernel (kTLS) where it offers them, so sendfile and splice stay zero-copy")
	rdmaDevice := fs.String("rdma-device", "", "verbs device to use (default: the one whose RoCE v2 GID reaches the peer)")
	gidIndex := fs.Int("gid-index", -1, "GID index to use (default: chosen per peer)")
	noRDMA := fs.Bool("no-rdma", false, "never use RDMA")
	rdmaSlots := fs.Int("rdma-slots", transfer.DefaultRDMASlots, "registered receive slots per incoming RDMA transfer")
	rdmaDepth := fs.Int("rdma-depth", rdma.DefaultDepth, fmt.Sprintf("RDMA WRITEs in flight per transfer this node sends, shared by its lanes (1 to %d, bounded by the receiver's slots)", rdma.MaxDepth))
	rdmaLanes := fs.Int("rdma-lanes", transfer.DefaultLanes(), fmt.Sprintf("queue pairs a transfer stripes its chunks over (1 to %d; a transfer uses the smaller of both ends' values; default %d, 1 on a single-CPU host)", transfer.MaxRDMALanes, transfer.DefaultRDMALanes))
	rdmaChunk := fs.Int64("rdma-chunk-size", transfer.DefaultRDMAChunk, "chunk size when a transfer may use RDMA")
	partialTTL := fs.Duration("partial-ttl", transfer.DefaultPartialTTL, "how long the partial file of a failed copy is kept for a resume (swept at start-up and periodically)")
	debugAddr := addDebugFlag(fs)
	treeEntries := fs.Int("tree-max-entries", transfer.DefaultTreeMaxEntries, "most entries (directories, files, links) of a directory tree this node receives in one copy")
	treeBytes := fs.Int64("tree-max-manifest-bytes", transfer.DefaultTreeMaxManifestBytes, "largest manifest of a directory tree this node receives (names and link targets, plus 64 bytes an entry)")
	rdmaIdle := fs.Duration("rdma-idle-expiry", transfer.DefaultRDMAIdleExpiry, "how long an idle queue pair to a peer is kept for reuse (negative: never reuse)")
	metricsListen := fs.String("metrics-listen", metrics.DefaultListen, `address serving Prometheus metrics at /metrics ("" turns it off; unauthenticated: keep it on loopback or a monitoring network)`)
	drainTimeout := fs.Duration("drain-timeout", DefaultDrainTimeout, "on SIGTERM, how long running transfers may finish before they are cancelled (partial files kept for a resume); a second SIGTERM stops at once")
	logs := addLogFlags(fs)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if *rdmaDepth < 1 || *rdmaDepth > rdma.MaxDepth {
		return usagef("--rdma-depth %d: want 1 to %d", *rdmaDepth, rdma.MaxDepth)
	}
	if *rdmaLanes < 1 || *rdmaLanes > transfer.MaxRDMALanes {
		return usagef("--rdma-lanes %d: want 1 to %d", *rdmaLanes, transfer.MaxRDMALanes)
	}
	if *treeEntries < 1 || *treeBytes < 1 {
		return usagef("--tree-max-entries and --tree-max-manifest-bytes must be positive")
	}
	if *partialTTL <= 0 {
		return usagef("--partial-ttl %v: want a positive duration", *partialTTL)
	}
	if *drainTimeout < 0 {
		return usagef("--drain-timeout %v: want 0 or a positive duration", *drainTimeout)
	}
	if *firstByte <= 0 || *maxUnauth < 1 {
		return usagef("--first-byte-timeout and --max-unauthenticated-conns must be positive")
	}
	if *root == "" || fs.NArg() > 0 {
		return usagef("--root DIR is required and no arguments are taken")
	}
	sendMode, err := fallback.ParseSendMode(*mode)
	if err != nil {
		return usagef("%v", err)
	}
	encryption, err := transfer.ParseDataEncryption(*dataEnc)
	if err != nil {
		return usagef("--data-encryption: %v", err)
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return err
	}
	log, err := logs.logger(os.Stderr)
	if err != nil {
		return err
	}
	stopDebug, err := startDebug(*debugAddr, log)
	if err != nil {
		return err
	}
	defer stopDebug()
	tlsCfg, err := tlsFlags.load(nodeID, log)
	if err != nil {
		return err
	}
	// Server-only TLS authenticates no caller: it takes a token or client certificates.
	mtls := tlsCfg != nil && tlsCfg.clientCA != nil
	if token == "" && !mtls && !*insecure {
		for _, l := range []struct{ flag, addr string }{{"--listen", *listen}, {"--data-listen", *dataListen}} {
			if !loopback(l.addr) {
				return usagef("%s %s is not a loopback address and there is no authentication: set --token-file (or $RXFER_TOKEN), or --tls-cert, --tls-key and --tls-client-ca, or pass --insecure to serve it unauthenticated", l.flag, l.addr)
			}
		}
	}
	r, err := transfer.OpenRoot(*root)
	if err != nil {
		return err
	}
	defer r.Close()
	data, err := fallback.ListenConfig{MaxUnauthenticated: *maxUnauth, NoTLS: encryption == transfer.EncryptOff, NoKTLS: !*useKTLS}.Listen(*dataListen, log)
	if err != nil {
		return fmt.Errorf("data channel: %w", err)
	}
	defer data.Close()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("control listener: %w", err)
	}
	var m *metrics.Metrics
	var metricsLis net.Listener
	if *metricsListen != "" {
		if metricsLis, err = net.Listen("tcp", *metricsListen); err != nil {
			return fmt.Errorf("metrics listener (--metrics-listen; \"\" turns it off): %w", err)
		}
		m = metrics.New(service.Version)
	}
	host, _ := os.Hostname()
	node := transfer.NewNode(transfer.Config{
		ID: cmp.Or(*nodeID, host), Root: r, Data: data, MaxConcurrent: *maxTransfers, MaxRegistered: *maxRegistered,
		MaxTransfersPerClient: *perClient, MaxReservedPerClient: *reservedPerClient, FirstByteTimeout: *firstByte,
		ChunkSize: *chunk, Streams: *streams, SendMode: sendMode, Logger: log, DataEncryption: encryption, NoKTLS: !*useKTLS,
		PartialTTL: *partialTTL, Observer: m.Observer(), TreeMaxEntries: *treeEntries, TreeMaxManifestBytes: *treeBytes,
		RDMA: transfer.RDMAConfig{Options: rdma.Options{Device: *rdmaDevice, GIDIndex: *gidIndex},
			Disabled: *noRDMA, Slots: *rdmaSlots, Depth: *rdmaDepth, Lanes: *rdmaLanes, Chunk: *rdmaChunk, IdleExpiry: *rdmaIdle},
	})
	if ok, why := fallback.KTLS(); !*useKTLS {
		log.Info("data-channel encryption uses crypto/tls (--ktls=false)", "data_encryption", encryption)
	} else if ok {
		log.Info("data-channel encryption uses kTLS where the cipher allows", "data_encryption", encryption)
	} else {
		log.Info("data-channel encryption uses crypto/tls: no kTLS", "reason", why, "data_encryption", encryption)
	}
	if r := node.Config().RDMAUnavailable; r != "" {
		log.Info("RDMA unavailable; transfers use TCP", "reason", r)
	}
	node.StartSweeper() // before serving: kept partial files are resumable (and counted) from the first request
	opts := service.Options{Addr: lis.Addr().String(), Token: token, Peers: peers, Logger: log, Instrument: m.Instrumentation()}
	tlsCfg.options(&opts)
	srv := service.New(node, opts)
	ready := fmt.Sprintf("rxfer serving control=%s data=%s\n", lis.Addr(), data.Addr())
	if m != nil {
		m.WatchNode(node)
		mctx, mstop := context.WithCancel(context.Background())
		defer mstop()
		go func() {
			if err := m.Serve(mctx, metricsLis); err != nil {
				log.Error("metrics server stopped", "err", err)
			}
		}()
		log.Info("serving Prometheus metrics", "url", "http://"+metricsLis.Addr().String()+"/metrics")
		ready += fmt.Sprintf("rxfer metrics=http://%s/metrics\n", metricsLis.Addr())
	}
	if token == "" && !mtls {
		log.Warn("control plane has no bearer token and no client certificates: anyone who can reach it can read and write the export root; use --tls-client-ca or --token-file beyond trusted networks")
	}
	log.Info("rxfer serving", "node", node.Config().ID, "root", *root, "version", service.Version, "crc32c", crc32c.Implementation())
	// The first line on stdout says the node is ready and where (ports may
	// have been 0); a second one where its metrics are. One write: a reader
	// of the first line alone leaves the second in the pipe.
	fmt.Print(ready)
	return serveUntilSignalled(func() error { return srv.Serve(lis) }, srv, node, *drainTimeout, log)
}

// loopback reports whether a listen address stays on this host: localhost,
// 127.0.0.0/8 or ::1. An empty host listens everywhere. An address that does
// not parse counts as loopback here: listening on it fails and says why.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
