// Package rdma is rxfer's RDMA transport: device and GID selection, one
// reliable-connected (RC) queue pair per connection (the engine stripes a
// transfer over one or more connections, its lanes; several Sends may share
// one chunk channel), registered staging slots on
// the receiver and a pipelined RDMA WRITE sender. It speaks the chunk contract
// the TCP transport in package fallback speaks too ([chunk.Chunk],
// [chunk.Sink], the verdicts and the done callback of [Sender.Send]), so the
// engine can switch between them; neither transport imports the other.
// It has no cgo of its own: every verbs call goes through package verbs.
//
// # Setting up
//
// The sender calls [NewSender] (device, PD, CQ, QP in INIT, receives posted)
// and sends its [EndpointInfo] over the authenticated control plane. The
// receiver calls [NewReceiver] with it and a [ReceiverConfig] that says
// staging slots or a window: that registers them, connects its QP (RTR, RTS)
// and returns its own EndpointInfo and the slots as [RemoteBuffer]s, which go
// back over the control plane to [Sender.Connect] (or [Sender.ConnectWindow]).
// The path MTU is the smaller of both active MTUs; PSNs are random (24 bits
// from crypto/rand). An endpoint pair that cannot talk (different GID address
// families, an invalid MTU) fails with an error wrapping [ErrMismatch]; a node
// without a usable device fails with [ErrUnavailable].
//
// # Reusing a connection
//
// A connection that carried a transfer cleanly can carry the next one to the
// same peer. [Sender.Park] (the last Send returned nil: every ack consumed,
// no probe outstanding) forgets the slots and returns the offer for the next
// transfer: a new PSN and ConnectedQPN, the receiver QP it is still connected
// to. [Receiver.Park] stops draining, deregisters the slots or window
// (their rkeys die, as in Close), waits until every acknowledgement's SEND
// completed and no chunk message is left unhandled, and returns a
// [ParkedEndpoint]: QP (RTS), CQ, PD, control buffers and posted receives,
// and the staging memory (up to 16 MiB, no region over it). [NewReceiver]
// with ReceiverConfig.Resume registers fresh slots on it (new rkeys, over
// the kept memory where it is large enough), and [Sender.Resume] takes them
// without touching the QP. If the receiver answers with a fresh QP instead,
// [Sender.Connect] on the parked sender resets its QP (RESET, INIT, receives
// reposted) and connects it to the new peer with the PSN it offered. Every
// endpoint has work requests for MaxDepth chunks in flight, so a parked one
// serves either receive mode.
//
// [Pool] runs this for the engine: it owns a node's parked connections
// (senders by destination and device, receiving endpoints by the source
// queue pair they are connected to), hands a transfer its lanes
// ([Pool.Senders], [Pool.Receiver]: parked first, new otherwise, falling
// back from a window to staging slots and from a failed resume to a fresh
// queue pair), matches a resumed endpoint to the sender's offer by QPN and
// GID ([Sender.Attach] on the other end), parks what a committed transfer
// left clean ([Pool.Release], [Pool.Keep]) and closes what expires, what
// sits on a device being removed and what its device reported unusable.
//
// # Data protocol (version 1)
//
// The receiver registers N slots of S bytes, each its own memory region with
// LOCAL_WRITE|REMOTE_WRITE (one rkey per slot, so a WRITE can never spill
// into a neighbouring slot), and keeps a receive posted per slot. For each
// chunk the sender, holding a free slot:
//
//  1. puts the chunk's bytes in a registered source buffer (a copy into one
//     of depth staging buffers, see below),
//  2. posts an unsignaled RDMA WRITE of the bytes into the slot, and
//  3. posts a signaled SEND of a 32-byte chunk message
//     {slot, chunk index, offset, length, crc32c}.
//
// RC executes a QP's requests in order, so when the SEND's receive completes
// at the receiver the WRITE before it has been placed. The receiver's
// completion goroutine copies the message out, reposts the receive and hands
// the chunk to one of a few verification workers (GOMAXPROCS/2, 1 to 8:
// CRC32C and pwrite of different slots proceed in parallel), which calls
// Sink.Admit (which claims the chunk), writes the slot's bytes to Sink.File
// at the offset (or its mapping), computes the CRC32C of the bytes that
// landed there, calls Sink.Landed, reposts the receive and answers
// with a SEND of a 32-byte ack {slot, chunk index, status} ([chunk.Status]:
// 0 ok, 1 CRC mismatch, 2 receiver I/O error, 3 rejected, 4 already
// verified, 5 in flight elsewhere). The ack is the credit: the
// sender reuses a slot (and its staging buffer) only after the ack arrived
// and its own SEND completed, so at most N×S bytes are registered for
// receiving and depth×S for sending, whatever the file size. Message layouts
// are in wire.go.
//
// # Window mode
//
// A receiver with ReceiverConfig.Window receives into caller-owned memory instead (the engine
// passes a MAP_SHARED mapping of a memfd-backed region's window): it is
// offered as ceil(len/S) slots, slot i being bytes [i*S, (i+1)*S), each
// registered as a memory region of its own (LOCAL_WRITE|REMOTE_WRITE). A
// sender connected with [Sender.ConnectWindow] writes the chunk with index i
// into slot i; the receiver admits it, deregisters the slot, then checks the
// CRC32C in place and acknowledges it — no pwrite, the bytes are already
// where they belong. Deregistering first makes a verified chunk final: a
// later WRITE to its slot fails at the responder (REM_ACCESS_ERR) instead of
// landing, so commit needs no second pass over the window. A slot whose
// chunk fails its CRC is registered again and its new rkey rides in the
// ack, for the resend. Slots are not reused, so credits are the depth only.
// The protocol messages are the same (the slot field equals the index).
//
// Why WRITE + SEND rather than WRITE_WITH_IMM: the receiver needs the index,
// offset, length and CRC of the chunk, which do not fit the 32 bits of an
// immediate; putting them elsewhere would need a second WRITE into a header
// area anyway. WRITE + SEND costs one more work request per chunk but no extra
// round trip, consumes one receive per chunk exactly as WRITE_WITH_IMM would,
// and keeps every per-chunk fact in one message that is checked as a whole.
//
// The sender's source bytes are copied into depth registered staging
// buffers (registered once per Sender): by pread, or, when the caller has a
// mapping of the source ([Source].Bytes; the engine keeps one for CRC32C), by
// a user-space copy from it, which under qemu TCG is several times cheaper
// than the kernel's rep movsb. Files always go through these bounded
// buffers: registering a mapping of the file instead was measured slower
// (README.md). Memory that is already a registrable mapping — the engine's
// memfd-backed regions — is registered for the one Send instead
// ([Source].Register: local read access, milliseconds for 128 MiB) and
// WRITEs go straight from it, with no copy.
//
// Work requests are posted by two poster goroutines, not by the Send loop.
// rxe runs a user QP's protocol work inside ibv_post_send, in the calling
// thread, until the send queue is empty; a second post meanwhile only queues
// its requests and returns (the kernel sees the QP's task busy and its runner
// picks them up). With two posters the send queue stays fed while the Send
// loop reads the next chunks and handles completions; posting from the loop
// itself left the queue empty between chunks (measured in README.md).
// [verbs.QueuePair.PostSend] allows concurrent calls for this.
//
// In staging mode the CRC32C is computed on the bytes once they are in the
// file, not in the slot, which the sender can overwrite at any time: what
// is verified is what the destination holds.
//
// Completions are taken with [verbs.CompletionQueue.Wait] (the completion
// channel: no core spins while a transfer is idle). A failed completion
// names its ibv_wc_status ([verbs.CompletionError]); the sender then moves its
// QP to the error state, answers every chunk in flight and every chunk still
// coming with an error wrapping [ErrBroken], and Send returns. Closing a
// receiver deregisters its slots first, so a sender still writing gets
// REM_ACCESS_ERR at once instead of waiting for retries to run out.
//
// Security: rkeys are capabilities; [RemoteBuffer] prints without its rkey and
// the package never logs one. Slots are registered for exactly one receiver's
// lifetime (one transfer, also on a reused connection), with the least
// access, in the PD of their connection.
package rdma
