package service

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/transfer"
)

// Version is rxfer's version, reported by GetNodeInfo and `rxfer version`.
var Version = "0.1.0-dev"

// Options configure a Server.
type Options struct {
	// Addr is this node's own control address, used when a Copy names no destination node.
	Addr string
	// Token, when set, must be presented as "authorization: Bearer TOKEN" on every call
	// (health checks excepted). A Copy presents it to its destination only if
	// that is this node itself or one of Peers; any other destination needs
	// the client's dest_token, so the node never hands its credential to an
	// address a client merely named.
	Token string
	// Peers are the control addresses (HOST:PORT) of the nodes this node
	// trusts with its Token (`serve --peer`).
	Peers []string
	// PeerOnly serves only the Peer API (a CLI acting as one end of a copy).
	PeerOnly bool
	Logger   *slog.Logger
	// TLS, if not nil, serves the API over TLS 1.3 with this configuration
	// (pki.ServerConfig re-reads a rotated certificate on each handshake).
	TLS *tls.Config
	// ClientCA, if not nil (with TLS), makes a verified client certificate
	// mandatory; its identity is what Policy judges.
	ClientCA *pki.CAPool
	// Policy authorizes certificate identities; nil is DefaultPolicy.
	Policy *Policy
	// PeerTLS, if not nil, is how this node dials destination nodes: over
	// TLS, verifying that the certificate names the node dialled, and
	// presenting the node's own certificate.
	PeerTLS *pki.Client
	// Instrument, if set, adds the metrics' interceptors to the server and
	// to this node's connections to peers (metrics.go).
	Instrument Instrumentation
}

// Server is a node's gRPC server.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	peers  *peerPool
}

// New builds the gRPC server for node.
func New(node *transfer.Node, opt Options) *Server {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	auth := newAuthenticator(opt)
	pool := newPeerPool(peerPoolSize, peerIdleTimeout)
	pool.dial = opt.Instrument.clientOptions()
	// The metrics' interceptors come first, so refused calls are counted too.
	g := grpc.NewServer(append(opt.Instrument.serverOptions(), serverCreds(opt),
		grpc.ChainUnaryInterceptor(auth.unary), grpc.ChainStreamInterceptor(auth.stream))...)
	pb.RegisterPeerServer(g, &peerServer{node: node, auth: auth})
	if !opt.PeerOnly {
		peers := make(map[string]bool)
		for _, p := range append([]string{opt.Addr}, opt.Peers...) {
			peers[canonicalAddr(p)] = true
		}
		pb.RegisterTransferServer(g, &transferServer{node: node, addr: opt.Addr, token: opt.Token, peers: peers, log: log,
			auth: auth, peerTLS: opt.PeerTLS, pool: pool})
	}
	h := health.NewServer()
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
	return &Server{grpc: g, health: h, peers: pool}
}

// Serve accepts connections on lis until Stop.
func (s *Server) Serve(lis net.Listener) error { return s.grpc.Serve(lis) }

// Stop marks the node not serving and stops the server: running RPCs are
// cancelled, which cancels their transfers (partial files are removed),
// and the connections to peers are closed.
func (s *Server) Stop() {
	s.health.Shutdown()
	s.grpc.Stop()
	s.peers.Close()
}

// transferServer serves the public Transfer API.
type transferServer struct {
	pb.UnimplementedTransferServer
	node  *transfer.Node
	addr  string
	token string
	peers map[string]bool // canonical addresses trusted with token, this node's own included
	log   *slog.Logger
	auth  *authenticator
	// peerTLS, if not nil, dials destinations over TLS (see Options.PeerTLS).
	peerTLS *pki.Client
	// pool keeps connections to destinations across copies.
	pool *peerPool
}

// canonicalAddr spells a HOST:PORT one way, so an allow-list entry matches
// however a client writes the same address (IPv6 forms, case of a name).
// No name is resolved: a name matches only itself.
func canonicalAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.JoinHostPort(ip.Unmap().String(), port)
	}
	return net.JoinHostPort(strings.ToLower(host), port)
}

// destToken is the bearer token a Copy presents to its destination: the
// client's dest_token, else this node's own token if dest is trusted with it.
func (s *transferServer) destToken(dest, given string) (string, error) {
	switch {
	case given != "":
		return given, nil
	case s.token == "" || s.peers[canonicalAddr(dest)] || s.peerTLS != nil:
		// Over TLS the token goes only to a node whose certificate names
		// the address dialled, so it cannot be handed to an impostor.
		return s.token, nil
	}
	return "", status.Errorf(codes.PermissionDenied,
		"node %s does not send its own token to %.256q, which is not a configured peer: add --peer %.256s to its serve command, or pass dest_token in the Copy request (rxfer cp --token-file does)",
		s.node.Config().ID, dest, dest)
}

func (s *transferServer) GetNodeInfo(ctx context.Context, _ *pb.GetNodeInfoRequest) (*pb.NodeInfo, error) {
	cfg := s.node.Config()
	tcp := &pb.TransportStatus{Transport: pb.Transport_TRANSPORT_TCP, Available: cfg.Data != nil, Address: cfg.DataAddr}
	if cfg.Data == nil {
		tcp.Reason = "no TCP data listener"
	}
	return &pb.NodeInfo{
		NodeId: cfg.ID, Version: Version, ExportRoot: cfg.Root.Dir(),
		Transports: []*pb.TransportStatus{tcp,
			{Transport: pb.Transport_TRANSPORT_RDMA, Available: cfg.RDMAUnavailable == "", Reason: cfg.RDMAUnavailable}},
		MaxConcurrentTransfers: int32(cfg.MaxConcurrent), ActiveTransfers: int32(s.node.Active()),
		RdmaDevices: DevicesToProto(s.node.Devices()),
	}, nil
}

func (s *transferServer) Copy(req *pb.CopyRequest, stream grpc.ServerStreamingServer[pb.TransferInfo]) error {
	srcRegion, err := regionRefFromProto(req.SourceRegion)
	if err != nil {
		return ToStatus(err)
	}
	destRegion, err := regionRefFromProto(req.DestRegion)
	if err != nil {
		return ToStatus(err)
	}
	switch {
	case (req.SourcePath == "") == (srcRegion == nil):
		return status.Error(codes.InvalidArgument, "name exactly one source: source_path (a file beneath this node's export root) or source_region")
	case (req.DestPath == "") == (destRegion == nil):
		return status.Error(codes.InvalidArgument, "name exactly one destination: dest_path (a file or directory beneath the destination's export root) or dest_region")
	case req.ChunkSize < 0 || req.Streams < 0:
		return status.Error(codes.InvalidArgument, "chunk_size and streams must not be negative (0 chooses the default)")
	}
	policy, err := PolicyFromProto(req.Transport)
	if err != nil {
		return ToStatus(err)
	}
	encryption, verify, err := copySecurityFromProto(req)
	if err != nil {
		return ToStatus(err)
	}
	dest := req.DestNode
	if dest == "" {
		dest = s.addr
	}
	if src := req.SourcePath; src != "" {
		err = s.auth.mayRead(stream.Context(), src)
	} else {
		err = s.auth.mayRead(stream.Context(), regionTarget(srcRegion.Name))
	}
	if err != nil {
		return err
	}
	token, err := s.destToken(dest, req.DestToken)
	if err != nil {
		return err
	}
	creds := Credentials{Token: token, TLS: s.peerTLS, Pin: req.DestTlsSha256, onBehalfOf: onBehalfOf(stream.Context())}
	if len(creds.Pin) > 0 && len(creds.Pin) != 32 {
		return status.Errorf(codes.InvalidArgument, "dest_tls_sha256 has %d bytes: want a SHA-256 (32)", len(creds.Pin))
	}
	peer, err := s.pool.Peer(creds, dest)
	if err != nil {
		return ToStatus(err)
	}
	defer peer.Close()
	var sendErr error
	_, err = s.node.Push(stream.Context(), transfer.PushRequest{
		SourcePath: req.SourcePath, DestNode: dest, DestPath: req.DestPath, Overwrite: req.Overwrite,
		Policy: policy, ChunkSize: req.ChunkSize, Streams: int(req.Streams),
		SourceRegion: srcRegion, DestRegion: destRegion, DataEncryption: encryption, Verify: verify, NoResume: req.NoResume,
		Recursive: req.Recursive, Contents: req.TreeContents, Preserve: !req.NoPreserve,
	}, peer, func(i transfer.Info) {
		if sendErr == nil {
			sendErr = stream.Send(InfoToProto(i))
		}
	})
	if err != nil {
		return ToStatus(err)
	}
	return sendErr
}

func (s *transferServer) GetTransfer(ctx context.Context, req *pb.GetTransferRequest) (*pb.TransferInfo, error) {
	info, err := s.node.Get(req.TransferId)
	if err != nil {
		return nil, ToStatus(err)
	}
	return InfoToProto(info), nil
}

func (s *transferServer) ListTransfers(ctx context.Context, _ *pb.ListTransfersRequest) (*pb.ListTransfersResponse, error) {
	var out pb.ListTransfersResponse
	for _, i := range s.node.List() {
		out.Transfers = append(out.Transfers, InfoToProto(i))
	}
	return &out, nil
}

func (s *transferServer) CancelTransfer(ctx context.Context, req *pb.CancelTransferRequest) (*pb.CancelTransferResponse, error) {
	info, err := s.node.Cancel(req.TransferId, req.Discard)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &pb.CancelTransferResponse{Transfer: InfoToProto(info)}, nil
}

func (s *transferServer) RegisterRegion(ctx context.Context, req *pb.RegisterRegionRequest) (*pb.RegionInfo, error) {
	info, err := s.node.RegisterRegion(req.Name, req.Size, req.File)
	if err != nil {
		return nil, ToStatus(err)
	}
	return regionToProto(info), nil
}

func (s *transferServer) DeregisterRegion(ctx context.Context, req *pb.DeregisterRegionRequest) (*pb.DeregisterRegionResponse, error) {
	if err := s.node.DeregisterRegion(req.Name); err != nil {
		return nil, ToStatus(err)
	}
	return &pb.DeregisterRegionResponse{}, nil
}

func (s *transferServer) ListRegions(ctx context.Context, _ *pb.ListRegionsRequest) (*pb.ListRegionsResponse, error) {
	var out pb.ListRegionsResponse
	for _, r := range s.node.Regions() {
		out.Regions = append(out.Regions, regionToProto(r))
	}
	return &out, nil
}
