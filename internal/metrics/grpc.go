package metrics

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/rxfer/rxfer/service"
)

// Instrumentation returns the gRPC interceptors that count and time this
// node's calls, as server and as a client of its peers. The method label
// is the full method name: grpc-go runs interceptors only for registered
// methods, so the set is bounded. A nil m (metrics off) adds nothing.
func (m *Metrics) Instrumentation() service.Instrumentation {
	if m == nil {
		return service.Instrumentation{}
	}
	return service.Instrumentation{
		ServerUnary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			start := time.Now()
			resp, err := h(ctx, req)
			m.observeServer(info.FullMethod, start, err)
			return resp, err
		},
		ServerStream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			start := time.Now()
			err := h(srv, ss)
			m.observeServer(info.FullMethod, start, err)
			return err
		},
		ClientUnary: func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			start := time.Now()
			err := invoker(ctx, method, req, reply, cc, opts...)
			m.grpcClientHandled.WithLabelValues(method, status.Code(err).String()).Inc()
			m.grpcClientSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
			return err
		},
		// A client stream counts once it was opened (its end is the caller's).
		ClientStream: func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			start := time.Now()
			s, err := streamer(ctx, desc, cc, method, opts...)
			m.grpcClientHandled.WithLabelValues(method, status.Code(err).String()).Inc()
			m.grpcClientSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
			return s, err
		},
	}
}

func (m *Metrics) observeServer(method string, start time.Time, err error) {
	m.grpcServerHandled.WithLabelValues(method, status.Code(err).String()).Inc()
	m.grpcServerSeconds.WithLabelValues(method).Observe(time.Since(start).Seconds())
}
