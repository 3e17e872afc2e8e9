package service

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/transfer"
)

// authenticator checks every call but health checks: the client
// certificate (when the server has a client CA), the bearer token (when it
// has one), and the policy's word on the method for a certificate identity.
type authenticator struct {
	token    string
	clientCA bool
	policy   *Policy
}

func newAuthenticator(opt Options) *authenticator {
	return &authenticator{token: opt.Token, clientCA: opt.ClientCA != nil, policy: cmpPolicy(opt.Policy)}
}

func cmpPolicy(p *Policy) *Policy {
	if p == nil {
		return DefaultPolicy
	}
	return p
}

// certAuth is a TLS connection's AuthInfo with the verdict on its client certificate.
type certAuth struct {
	credentials.TLSInfo
	id  pki.Identity
	err error // why the certificate was refused (or that there was none)
}

// verifyingCreds serves TLS and judges the client's certificate once per
// connection, after the handshake: a refused client then gets an RPC
// status that says why (Unauthenticated), not a bare handshake alert.
type verifyingCreds struct {
	credentials.TransportCredentials
	ca *pki.CAPool
}

func (c verifyingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, ai, err
	}
	info, ok := ai.(credentials.TLSInfo)
	if !ok {
		conn.Close()
		return nil, nil, errors.New("TLS credentials returned no TLS state")
	}
	id, err := c.ca.Verify(info.State.PeerCertificates, x509.ExtKeyUsageClientAuth)
	return conn, certAuth{TLSInfo: info, id: id, err: err}, nil
}

func (c verifyingCreds) Clone() credentials.TransportCredentials {
	return verifyingCreds{c.TransportCredentials.Clone(), c.ca}
}

// serverCreds is how a server with opt speaks: TLS (judging client
// certificates when it has a client CA) or plaintext.
func serverCreds(opt Options) grpc.ServerOption {
	if opt.TLS == nil {
		return grpc.Creds(insecure.NewCredentials())
	}
	cfg := opt.TLS.Clone()
	cfg.MinVersion = max(cfg.MinVersion, tls.VersionTLS13)
	creds := credentials.NewTLS(cfg)
	if opt.ClientCA != nil {
		cfg.ClientAuth = max(cfg.ClientAuth, tls.RequestClientCert)
		creds = verifyingCreds{credentials.NewTLS(cfg), opt.ClientCA}
	}
	return grpc.Creds(creds)
}

// callerOf returns the certificate identity of the caller, if it has one.
func callerOf(ctx context.Context) (pki.Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, false
	}
	a, ok := p.AuthInfo.(certAuth)
	return a.id, ok && a.err == nil
}

func (a *authenticator) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, "/grpc.health.v1.") {
		return nil
	}
	if a.clientCA {
		p, _ := peer.FromContext(ctx)
		var auth certAuth
		if p != nil {
			auth, _ = p.AuthInfo.(certAuth)
		}
		switch {
		case p == nil || p.AuthInfo == nil:
			return status.Error(codes.Unauthenticated, "this node requires TLS with a client certificate")
		case errors.Is(auth.err, pki.ErrNoCertificate):
			return status.Error(codes.Unauthenticated, "no client certificate: this node requires one signed by its client CA (rxfer: --tls-cert and --tls-key, or RXFER_TLS_CERT and RXFER_TLS_KEY)")
		case auth.err != nil:
			return status.Errorf(codes.Unauthenticated, "client certificate refused: %v", auth.err)
		}
	}
	if a.token != "" {
		if err := a.checkToken(ctx); err != nil {
			return err
		}
	}
	id, ok := callerOf(ctx)
	if !ok {
		return nil // token and loopback callers: no identity, no policy
	}
	var err error
	switch {
	case strings.HasPrefix(method, "/rxfer.v1.Peer/"):
		err = a.policy.Peer(id)
	case method == "/rxfer.v1.Transfer/RegisterRegion" || method == "/rxfer.v1.Transfer/DeregisterRegion":
		err = a.policy.ManageRegions(id)
	default:
		err = a.policy.Call(id)
	}
	return ToStatus(err)
}

func (a *authenticator) checkToken(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if got, ok := strings.CutPrefix(v, "Bearer "); ok && subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "missing or wrong bearer token (set --token-file on both ends)")
}

func (a *authenticator) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *authenticator) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// mayRead checks the caller's read permission on target (a path or @REGION).
func (a *authenticator) mayRead(ctx context.Context, target string) error {
	if id, ok := callerOf(ctx); ok {
		return ToStatus(a.policy.Read(id, target))
	}
	return nil
}

// mayWrite checks that the caller, and the identity a calling node acts
// for (onBehalfOf, a URI; trusted only from a certificate node), may write target.
func (a *authenticator) mayWrite(ctx context.Context, target, onBehalfOf string) error {
	id, ok := callerOf(ctx)
	if !ok {
		return nil
	}
	if err := a.policy.Write(id, target); err != nil {
		return ToStatus(err)
	}
	if onBehalfOf == "" {
		return nil
	}
	client, err := pki.ParseURI(onBehalfOf)
	if err != nil {
		return ToStatus(fmt.Errorf("%w: on_behalf_of: %w", transfer.ErrInvalid, err))
	}
	if err := a.policy.Write(client, target); err != nil {
		return ToStatus(fmt.Errorf("%w (asked of %s by %s)", err, id, client))
	}
	return nil
}

// onBehalfOf is the identity a node passes on when it acts for its caller.
func onBehalfOf(ctx context.Context) string {
	if id, ok := callerOf(ctx); ok {
		return id.URI()
	}
	return ""
}

// Credentials say how to reach a node's control API: over TLS (verifying
// the node with a CA and the host dialled, or with a pinned certificate)
// or in plaintext, with a bearer token or not.
type Credentials struct {
	// Token, if not empty, is presented as "authorization: Bearer TOKEN".
	Token string
	// TLS, if not nil, verifies nodes and presents its client certificate.
	TLS *pki.Client
	// Pin, if set, is the SHA-256 of the one certificate to accept (a
	// pulling CLI's one-copy destination); TLS's certificate is presented.
	Pin []byte
	// onBehalfOf is passed in Prepare: the identity this node acts for.
	onBehalfOf string
}

// Dial returns a client connection to the node at addr.
func (c Credentials) Dial(addr string) (*grpc.ClientConn, error) {
	opts, err := c.dialOptions(addr)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, opts...)
}

// dialOptions are Dial's options for addr: transport security and token.
func (c Credentials) dialOptions(addr string) ([]grpc.DialOption, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	switch {
	case len(c.Pin) > 0:
		opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(c.TLS.PinnedConfig(c.Pin)))
	case c.TLS != nil:
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("%w: address %s: %w", transfer.ErrInvalid, transfer.Quote(addr), err)
		}
		opts[0] = grpc.WithTransportCredentials(credentials.NewTLS(c.TLS.Config(host)))
	}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(c.Token)))
	}
	return opts, nil
}

// DialPeer returns a transfer.Peer that speaks to the node at addr.
func (c Credentials) DialPeer(addr string) (transfer.Peer, error) {
	conn, err := c.Dial(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", transfer.ErrPeerUnavailable, addr, err)
	}
	return &peerClient{addr: addr, conn: conn, rpc: pb.NewPeerClient(conn), onBehalfOf: c.onBehalfOf}, nil
}
