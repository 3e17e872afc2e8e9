package service

import (
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Instrumentation is what the metrics layer adds to the gRPC server and to
// a node's connections to its peers: interceptors that count and time
// calls. The zero value adds nothing.
type Instrumentation struct {
	ServerUnary  grpc.UnaryServerInterceptor
	ServerStream grpc.StreamServerInterceptor
	ClientUnary  grpc.UnaryClientInterceptor
	ClientStream grpc.StreamClientInterceptor
}

func (i Instrumentation) serverOptions() []grpc.ServerOption {
	var opts []grpc.ServerOption
	if i.ServerUnary != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(i.ServerUnary))
	}
	if i.ServerStream != nil {
		opts = append(opts, grpc.ChainStreamInterceptor(i.ServerStream))
	}
	return opts
}

func (i Instrumentation) clientOptions() []grpc.DialOption {
	var opts []grpc.DialOption
	if i.ClientUnary != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(i.ClientUnary))
	}
	if i.ClientStream != nil {
		opts = append(opts, grpc.WithChainStreamInterceptor(i.ClientStream))
	}
	return opts
}

// Drain marks the node NOT_SERVING on gRPC health (every service name),
// so load balancers and orchestrators send it nothing new; running calls
// go on. The node's engine refuses new transfers itself (transfer.Node.Drain).
func (s *Server) Drain() {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.Shutdown() // every service NOT_SERVING, and no later update undoes it
}

// GracefulStop stops the server once the calls in flight have returned,
// or after grace, whichever is first (long-lived streams such as health
// watchers would hold a graceful stop forever), then closes the
// connections to peers.
func (s *Server) GracefulStop(grace time.Duration) {
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.grpc.Stop()
		<-done
	}
	s.peers.Close()
}
