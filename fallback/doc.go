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
// # Wire format (version 2)
//
// All integers are big-endian. A [Token] is a 16-byte id and a 32-byte
// secret; the secret never travels on the data wire. An encrypted connection
// ([SendOptions].Encrypt) first runs a TLS 1.3 handshake, in which the sender
// accepts only the certificate whose SHA-256 the destination sent over the
// control plane ([Listener.CertSHA256]); everything below then travels inside
// TLS (kTLS where the kernel offers it). A connection starts with a preamble
// from the sender:
//
//	magic "RXFD" (4) | version uint16 = 2 | flags uint16 = 0 | id (16) | nonce (16) | proof (32)   72 bytes
//
// where proof = HMAC-SHA256(secret, "rxfer data v2 preamble" ‖ the first 40
// bytes). The receiver reads it under a deadline ([ListenConfig].PreambleTimeout).
// A wrong magic closes the connection without a reply; otherwise the receiver answers
//
//	magic "RXFR" (4) | status uint8 | reserved (3)                            8 bytes
//
// with status 0 (accepted), 1 (unknown id, wrong proof, or a nonce already
// used for the transfer: a replayed preamble), 2 (unsupported version/flags)
// or 4 (plaintext for a transfer that requires encryption,
// [ErrEncryptionRequired]) and closes the connection unless it accepted it. A
// connection that arrives while [ListenConfig].MaxUnauthenticated others have
// not presented their preamble yet is answered at once with status 3 (busy,
// [ErrReceiverBusy]) and closed. Every refusal is logged (never the token), at
// most one line per kind per [ListenConfig].LogInterval, and affects no other
// connection. Each direction of an accepted connection has a key,
// HMAC-SHA256(secret, label ‖ id ‖ nonce), and every header and ack below is
// followed by a 16-byte tag: HMAC-SHA256(key, sequence number (8) ‖ frame),
// truncated, the sequence number counting that direction's frames from 0. A
// header or ack whose tag is wrong ends the connection. Then, for each chunk,
// the sender writes a header followed by exactly Length bytes (not tagged, so
// that they can stay zero-copy: their integrity is the CRC32C the tag covers):
//
//	magic "RXFC" (4) | index uint32 | offset int64 | length uint32 | crc32c uint32 | tag (16)   40 bytes
//
// The receiver checks the tag and the header (magic, offset ≥ 0, length > 0, no overflow) and
// asks [chunk.Sink].Admit before it reads a single data byte; a malformed header closes the
// connection, a refused one is answered with status 3 and then closed. Each chunk is
// answered, in order, with
//
//	index uint32 | status uint8 | reserved (3) | tag (16)                     24 bytes
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
