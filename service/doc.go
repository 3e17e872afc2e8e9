// Package service is rxfer's gRPC boundary: the public Transfer API and the
// node-to-node Peer API, served from a [transfer.Node]. It validates
// requests, converts between protobuf and the engine's plain types
// (convert.go) and maps engine errors to status codes (errors.go). Only this
// package and the CLI's composition root (cmd/rxfer) speak protobuf; the
// engine and the transports below never do, and service sees the RDMA
// transport only through the engine (device inventory, endpoints and
// buffers as transfer types).
package service
