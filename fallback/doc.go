// Package fallback is rxfer's TCP data channel: the transport used when RDMA is not
// available on both ends, or fails mid-transfer.
//
// The chunk descriptor, the sink and the verdicts are package chunk's, shared with
// the RDMA transport. The receiving node runs one [Listener]. For each incoming transfer the engine
// registers a [chunk.Sink] (the partial destination file plus bookkeeping) under a fresh
// random [Token] with [Listener.Expect] and hands the listener's address and the token
// to the sender over the authenticated control plane. The sender calls [Send], which
// opens several parallel TCP connections, presents the token on each, and streams
// chunks; the receiver lands every chunk at its offset, reads it back, checks its
// CRC32C and acknowledges it.
//
// Zero copy: the sender uses sendfile(2) with an explicit offset per chunk
// ([SendFile], the default) or pread+write through a 1 MiB buffer ([ReadWrite]); the
// receiver splices socket → pipe → file at an explicit offset, waiting on Go's poller
// when the socket is empty, so chunk bytes never pass through user space on either
// side except for the read-back verification. Connections never share a file
// position. The package is Linux-only.
//
// # Wire format (version 1)
//
// All integers are big-endian. A connection starts with a preamble from the sender:
//
//	magic "RXFD" (4) | version uint16 = 1 | flags uint16 = 0 | token (16)     24 bytes
//
// The receiver reads it under a deadline ([ListenConfig].PreambleTimeout). A wrong
// magic closes the connection without a reply; otherwise the receiver answers
//
//	magic "RXFR" (4) | status uint8 | reserved (3)                            8 bytes
//
// with status 0 (accepted), 1 (unknown token) or 2 (unsupported version/flags) and
// closes the connection unless it accepted it. A connection that arrives while
// [ListenConfig].MaxUnauthenticated others have not presented their preamble yet
// is answered at once with status 3 (busy, [ErrReceiverBusy]) and closed. Every
// refusal is logged (never the token), at most one line per kind per
// [ListenConfig].LogInterval, and affects no other connection. Then, for each chunk, the sender writes a
// header followed by exactly Length bytes:
//
//	magic "RXFC" (4) | index uint32 | offset int64 | length uint32 | crc32c uint32   24 bytes
//
// The receiver checks the header (magic, offset ≥ 0, length > 0, no overflow) and
// asks [chunk.Sink].Admit before it reads a single data byte; a malformed header closes the
// connection, a refused one is answered with status 3 and then closed. Each chunk is
// answered, in order, with
//
//	index uint32 | status uint8 | reserved (3)                                8 bytes
//
// status ([chunk.Status]) 0 = landed and verified, 1 = CRC32C mismatch
// ([chunk.ErrChecksum]; the stream goes on and the chunk may be re-sent), 2 = receiver
// I/O error ([chunk.ErrReceiverIO]; the connection is then closed because the rest of
// the chunk is still unread), 3 = rejected ([chunk.ErrRejected]; closed), 4 = already
// verified ([chunk.ErrAlreadyVerified]) and 5 = in flight on another connection
// ([chunk.ErrInFlight]). Admit claims a chunk's index when its header arrives: a
// verified chunk is final and a claimed one is landed by one connection only, so
// statuses 4 and 5 answer a header for such a chunk; its bytes are read and
// discarded, never written, and the stream goes on. The sender keeps at most
// [SendOptions].Window chunks unacknowledged per connection and ends a connection
// with a TCP half-close between chunks, which the receiver takes as a clean end.
//
// See README.md for the measurements behind [DefaultStreams] and [DefaultMode], and
// how to repeat them.
package fallback
