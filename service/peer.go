package service

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/transfer"
)

// prepareTimeout bounds Peer.Prepare, so an unreachable peer fails fast.
const prepareTimeout = 20 * time.Second

// peerServer serves the Peer API (destination side) from the engine.
type peerServer struct {
	pb.UnimplementedPeerServer
	node *transfer.Node
	auth *authenticator
}

func (s *peerServer) Prepare(ctx context.Context, req *pb.PrepareRequest) (*pb.PrepareResponse, error) {
	offer, err := endpointsFromProto(req.Rdma)
	if err != nil {
		return nil, ToStatus(err)
	}
	destRegion, err := regionRefFromProto(req.DestRegion)
	if err != nil {
		return nil, ToStatus(err)
	}
	policy, err := PolicyFromProto(req.Transport)
	if err != nil {
		return nil, ToStatus(err)
	}
	target := req.DestPath
	if destRegion != nil {
		target = regionTarget(destRegion.Name)
	}
	if err := s.auth.mayWrite(ctx, target, req.OnBehalfOf); err != nil {
		return nil, err // before the engine: a denied write creates nothing
	}
	tree, err := treeFromProto(req.Tree)
	if err != nil {
		return nil, ToStatus(err)
	}
	var client string
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		client = p.Addr.String()
	}
	var inline *transfer.InlineData
	if req.Inline {
		inline = &transfer.InlineData{Bytes: req.InlineData, CRC32C: req.InlineCrc32C}
	}
	resp, err := s.node.Prepare(ctx, transfer.PrepareRequest{
		Client: client, ID: req.TransferId, SourceNode: req.SourceNode, SourcePath: req.SourcePath, SourceName: req.SourceName,
		DestPath: req.DestPath, Size: req.Size, ChunkSize: req.ChunkSize, Overwrite: req.Overwrite,
		Policy: policy, RDMA: offer, RDMAUnavailable: req.RdmaUnavailable,
		DestRegion: destRegion, SourceOffset: req.SourceOffset, MACKey: req.MacKey,
		SourceMtimeNs: req.SourceMtimeUnixNs, SourceInode: req.SourceInode, SourceGeneration: req.SourceGeneration, NoResume: req.NoResume,
		Inline: inline,
		Tree:   tree, TreeContents: req.TreeContents, TreeMore: req.TreeMore, TreeBatch: int(req.TreeBatch),
	})
	if err != nil {
		return nil, ToStatus(err)
	}
	if resp.TreePending {
		return &pb.PrepareResponse{TreePending: true}, nil
	}
	out := &pb.PrepareResponse{
		Transport: transportToProto(resp.Transport), FinalPath: resp.FinalPath, FallbackReason: resp.FallbackReason,
		Rdma: channelsToProto(resp.RDMA), Resumed: resumedToProto(resp.Resumed), ResumeNote: resp.ResumeNote,
		TreeAccepted: resp.TreeAccepted,
	}
	if c := resp.Committed; c != nil {
		out.Committed, out.FinalPath, out.Crc32C = true, c.FinalPath, c.CRC32C
	}
	if resp.TCP.Addr != "" {
		out.Tcp = &pb.TcpChannel{Address: reachableDataAddr(ctx, resp.TCP.Addr), Token: resp.TCP.Token,
			CertSha256: resp.TCP.CertSHA256, EncryptionRequired: resp.TCP.RequireTLS}
	}
	return out, nil
}

// reachableDataAddr replaces an unspecified host in the data address
// (a listener on 0.0.0.0 or [::]) with the local address the peer used to
// reach this control server, which the peer can evidently reach.
func reachableDataAddr(ctx context.Context, dataAddr string) string {
	host, port, err := net.SplitHostPort(dataAddr)
	if err != nil {
		return dataAddr
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return dataAddr
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.LocalAddr == nil {
		return dataAddr
	}
	if local, _, err := net.SplitHostPort(p.LocalAddr.String()); err == nil {
		return net.JoinHostPort(local, port)
	}
	return dataAddr
}

func (s *peerServer) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	resp, err := s.node.Commit(ctx, transfer.CommitRequest{ID: req.TransferId, Size: req.Size, CRC32C: req.Crc32C, MAC: req.Mac})
	if err != nil {
		return nil, ToStatus(err)
	}
	return &pb.CommitResponse{FinalPath: resp.FinalPath, Crc32C: resp.CRC32C, MacVerified: resp.MACVerified}, nil
}

func (s *peerServer) Abort(ctx context.Context, req *pb.AbortRequest) (*pb.AbortResponse, error) {
	if err := s.node.Abort(ctx, req.TransferId, req.Reason, req.Discard); err != nil {
		return nil, ToStatus(err)
	}
	return &pb.AbortResponse{}, nil
}

// peerClient is a transfer.Peer over gRPC.
type peerClient struct {
	addr       string
	conn       *grpc.ClientConn
	rpc        pb.PeerClient
	onBehalfOf string // passed in Prepare (Credentials.onBehalfOf)

	// pool, if not nil, lent conn (entry); Close returns it, and creds redial it.
	pool   *peerPool
	creds  Credentials
	entry  *pooledConn
	reused bool // entry carried copies before this one
}

// DialPeer returns a transfer.Peer that speaks to the node at addr in
// plaintext, presenting token (if not empty) as its bearer credential
// (Credentials.DialPeer speaks TLS).
func DialPeer(addr, token string) (transfer.Peer, error) {
	return Credentials{Token: token}.DialPeer(addr)
}

// Dial returns a plaintext client connection to a node's control API that
// presents token, if not empty, as its bearer credential (Credentials.Dial
// speaks TLS).
func Dial(addr, token string) (*grpc.ClientConn, error) {
	return Credentials{Token: token}.Dial(addr)
}

// bearer is a per-RPC credential: "authorization: Bearer TOKEN".
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

func (c *peerClient) Prepare(ctx context.Context, req transfer.PrepareRequest) (transfer.PrepareResponse, error) {
	// A destination that resumes reads its partial file back first: allow
	// for that at a slow disk's pace (~256 MiB/s).
	ctx, cancel := context.WithTimeout(ctx, prepareTimeout+time.Duration(req.Size>>28)*time.Second)
	defer cancel()
	resp, err := c.prepare(ctx, req)
	// A pooled connection may have gone bad since its last copy: one new
	// connection, then whatever it says.
	if status.Code(err) == codes.Unavailable && c.redial() {
		resp, err = c.prepare(ctx, req)
	}
	if err != nil {
		return transfer.PrepareResponse{}, fromStatus(c.addr, err)
	}
	resumed, err := resumedFromProto(resp.Resumed)
	if err != nil {
		return transfer.PrepareResponse{}, err
	}
	transport, err := transportFromProto(resp.Transport)
	if err != nil {
		return transfer.PrepareResponse{}, err
	}
	ch, err := channelsFromProto(resp.Rdma)
	if err != nil {
		return transfer.PrepareResponse{}, err
	}
	out := transfer.PrepareResponse{
		Transport: transport, FinalPath: resp.FinalPath, FallbackReason: resp.FallbackReason,
		TCP: transfer.TCPChannel{Addr: resp.GetTcp().GetAddress(), Token: resp.GetTcp().GetToken(),
			CertSHA256: resp.GetTcp().GetCertSha256(), RequireTLS: resp.GetTcp().GetEncryptionRequired()}, RDMA: ch,
		Resumed: resumed, ResumeNote: resp.ResumeNote, TreeAccepted: resp.TreeAccepted,
	}
	if resp.Committed {
		if req.Inline == nil {
			return transfer.PrepareResponse{}, fmt.Errorf("%w: destination %s says it committed a transfer whose bytes it was not sent", transfer.ErrInvalid, c.addr)
		}
		out.Committed = &transfer.CommitResponse{FinalPath: resp.FinalPath, CRC32C: resp.Crc32C}
	}
	return out, nil
}

func (c *peerClient) prepare(ctx context.Context, req transfer.PrepareRequest) (*pb.PrepareResponse, error) {
	if req.Tree != nil {
		return c.prepareTree(ctx, req)
	}
	return c.prepareOne(ctx, req)
}

func (c *peerClient) prepareOne(ctx context.Context, req transfer.PrepareRequest) (*pb.PrepareResponse, error) {
	var tree *pb.TreeManifest
	if req.Tree != nil {
		tree = treeToProto(req.Tree.Entries, req.Tree.Preserve)
	}
	return c.rpc.Prepare(ctx, &pb.PrepareRequest{
		Tree: tree, TreeContents: req.TreeContents, TreeMore: req.TreeMore, TreeBatch: uint32(req.TreeBatch),
		TransferId: req.ID, SourceNode: req.SourceNode, SourcePath: req.SourcePath, SourceName: req.SourceName,
		DestPath: req.DestPath, Size: req.Size, ChunkSize: req.ChunkSize, Overwrite: req.Overwrite,
		Transport: policyToProto(req.Policy), Tcp: &pb.TcpOffer{},
		Rdma: endpointsToProto(req.RDMA), RdmaUnavailable: req.RDMAUnavailable,
		DestRegion: regionRefToProto(req.DestRegion), SourceOffset: req.SourceOffset, OnBehalfOf: c.onBehalfOf, MacKey: req.MACKey,
		SourceMtimeUnixNs: req.SourceMtimeNs, SourceInode: req.SourceInode, SourceGeneration: req.SourceGeneration, NoResume: req.NoResume,
		Inline: req.Inline != nil, InlineData: req.Inline.GetBytes(), InlineCrc32C: req.Inline.GetCRC32C(),
	})
}

func (c *peerClient) Commit(ctx context.Context, req transfer.CommitRequest) (transfer.CommitResponse, error) {
	resp, err := c.rpc.Commit(ctx, &pb.CommitRequest{TransferId: req.ID, Size: req.Size, Crc32C: req.CRC32C, Mac: req.MAC})
	if err != nil {
		return transfer.CommitResponse{}, fromStatus(c.addr, err)
	}
	return transfer.CommitResponse{FinalPath: resp.FinalPath, CRC32C: resp.Crc32C, MACVerified: resp.MacVerified}, nil
}

func (c *peerClient) Abort(ctx context.Context, id, reason string, discard bool) error {
	_, err := c.rpc.Abort(ctx, &pb.AbortRequest{TransferId: id, Reason: reason, Discard: discard})
	return fromStatus(c.addr, err)
}

// Close closes the connection, or returns a pooled one to its pool.
func (c *peerClient) Close() error {
	if c.pool == nil {
		return c.conn.Close()
	}
	if c.entry != nil {
		c.pool.release(c.entry, false)
		c.entry = nil
	}
	return nil
}
