package fallback

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
)

// Binding a data connection to its transfer (wire version 2): the token's
// secret never travels on the data wire. The preamble carries the token's id,
// a fresh nonce and an HMAC-SHA256 over both keyed by the secret (the proof);
// the receiver refuses an unknown id, a wrong proof and a nonce it has seen
// for the transfer before (a replayed preamble). Each direction then has its
// own key derived from the secret, the id and the nonce, and every chunk
// header and ack is followed by a 16-byte tag: HMAC-SHA256(key, sequence
// number ‖ frame), truncated. So an observer of one connection can neither open
// another (no secret, and the nonce is spent) nor inject, reorder or replay a
// header or ack on any connection. Chunk payloads are not tagged, so that they
// can stay zero-copy; their integrity is the header's CRC32C (which the tag
// covers) and, with --verify mac, a keyed BLAKE3 of the whole file.

// Labels separate the uses of the secret.
const (
	labelProof    = "rxfer data v2 preamble"
	labelSender   = "rxfer data v2 sender->receiver"
	labelReceiver = "rxfer data v2 receiver->sender"
)

func newNonce() ([nonceLen]byte, error) {
	var n [nonceLen]byte
	if _, err := rand.Read(n[:]); err != nil {
		return n, fmt.Errorf("fallback: nonce: %w", err)
	}
	return n, nil
}

// preambleProof is the HMAC that proves a sender holds tok's secret; body is
// the preamble up to the proof.
func preambleProof(tok Token, body []byte) []byte {
	m := hmac.New(sha256.New, tok.secret())
	m.Write([]byte(labelProof))
	m.Write(body)
	return m.Sum(nil)
}

// checkProof reports whether the preamble b (as received) proves tok's secret.
func checkProof(tok Token, b []byte) bool {
	return hmac.Equal(preambleProof(tok, b[:preambleLen-proofLen]), b[preambleLen-proofLen:preambleLen])
}

// directionKey derives the key of one direction of the connection that
// presented nonce.
func directionKey(tok Token, nonce [nonceLen]byte, label string) []byte {
	m := hmac.New(sha256.New, tok.secret())
	m.Write([]byte(label))
	id := tok.id()
	m.Write(id[:])
	m.Write(nonce[:])
	return m.Sum(nil)
}

// frameMAC tags (or checks) the frames of one direction of a connection in
// order: the sequence number makes a frame valid only at its own place. It is
// used by one goroutine.
type frameMAC struct {
	h   hash.Hash
	seq uint64
	sum []byte
}

func newFrameMAC(key []byte) *frameMAC {
	return &frameMAC{h: hmac.New(sha256.New, key), sum: make([]byte, 0, sha256.Size)}
}

// next returns the tag of frame at the next sequence number.
func (m *frameMAC) next(frame []byte) []byte {
	m.h.Reset()
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], m.seq)
	m.seq++
	m.h.Write(seq[:])
	m.h.Write(frame)
	m.sum = m.h.Sum(m.sum[:0])
	return m.sum[:tagLen]
}

// seal appends frame's tag to b, which ends with frame.
func (m *frameMAC) seal(b []byte, frameLen int) []byte {
	return append(b, m.next(b[len(b)-frameLen:])...)
}

// open checks the tag that follows a frame of frameLen bytes in b.
func (m *frameMAC) open(b []byte, frameLen int, what string) error {
	if !hmac.Equal(m.next(b[:frameLen]), b[frameLen:frameLen+tagLen]) {
		return fmt.Errorf("%w: %s fails authentication (not from the holder of the transfer's token, or altered on the way)", ErrBadHeader, what)
	}
	return nil
}

// connMACs are the two directions of one connection, from one end's view.
type connMACs struct {
	out, in *frameMAC
}

// senderMACs and receiverMACs derive a connection's frame keys.
func senderMACs(tok Token, nonce [nonceLen]byte) connMACs {
	return connMACs{out: newFrameMAC(directionKey(tok, nonce, labelSender)), in: newFrameMAC(directionKey(tok, nonce, labelReceiver))}
}

func receiverMACs(tok Token, nonce [nonceLen]byte) connMACs {
	return connMACs{out: newFrameMAC(directionKey(tok, nonce, labelReceiver)), in: newFrameMAC(directionKey(tok, nonce, labelSender))}
}
