// Package transfer is rxfer's engine: the transfer state machine, chunking
// and CRC32C verification, the choice of transport and failover from RDMA
// to TCP, export-root path resolution, regions and atomic commit. It knows
// no protobuf (the service layer drives it from gRPC, through [Peer] for
// the node-to-node half) and moves bytes with two transports that share
// package chunk's contract: package rdma (lanes taken from the node's
// rdma.Pool) and package fallback (TCP).
//
// A push ([Node.Push], send.go) reads as its steps: validate, open the
// source, offer RDMA lanes (lanes.go), admit, prepare the destination, move
// the chunks (the scheduler in schedule.go hands them to RDMA, then to TCP
// if RDMA breaks), commit, and park the lanes or release them. The
// destination's [Node.Prepare] (receive.go) validates, admits, creates the
// destination, opens the channels (lanes.go for RDMA) and starts receiving;
// [Node.Commit] verifies, publishes and parks its lanes. Measurements behind
// the defaults are in README.md.
package transfer
