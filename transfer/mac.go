package transfer

import (
	"crypto/hmac"
	"crypto/rand"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"github.com/zeebo/blake3"
)

// --verify mac: a whole-file keyed BLAKE3 with a per-transfer random key that
// only the control plane carries (Prepare), computed by the source over what
// it sends and by the destination over the bytes it is about to commit, and
// compared before the commit. The per-chunk CRC32C catches accidents; it is
// not a MAC, and someone who can alter bytes on a data path (plaintext TCP
// payloads, or RDMA, which rxe and RoCE carry in the clear) can keep a CRC
// while changing the bytes. Engine-level, so it covers every transport.

// VerifyMode is how a transfer's bytes are verified before commit.
type VerifyMode int

// Verification modes.
const (
	// VerifyCRC: CRC32C per chunk and over the whole file.
	VerifyCRC VerifyMode = iota
	// VerifyMAC: also the whole-file keyed BLAKE3.
	VerifyMAC
)

// String returns "crc32c" or "crc32c+mac".
func (v VerifyMode) String() string {
	if v == VerifyMAC {
		return "crc32c+mac"
	}
	return "crc32c"
}

// Sizes of the MAC's key and sum.
const (
	MACKeyLen = 32
	MACLen    = 32
)

// macStep is how much the source hashes between checks for a stop.
const macStep = 4 << 20

// sourceMAC is the source's running whole-file MAC.
type sourceMAC struct {
	key  []byte
	stop atomic.Bool
	sum  chan macResult
}

type macResult struct {
	sum []byte
	err error
}

// startMAC makes the transfer's key and starts hashing the source's mapping
// (data, the transfer's bytes) beside the sending. nil without --verify mac.
func startMAC(mode VerifyMode, data []byte, release bool) (*sourceMAC, error) {
	if mode != VerifyMAC {
		return nil, nil
	}
	m := &sourceMAC{key: make([]byte, MACKeyLen), sum: make(chan macResult, 1)}
	if _, err := rand.Read(m.key); err != nil {
		return nil, fmt.Errorf("MAC key: %w", err)
	}
	h, err := blake3.NewKeyed(m.key)
	if err != nil {
		return nil, err
	}
	go func() {
		var res macResult
		defer func() { m.sum <- res }()
		// A source truncated under us faults the mapping: an error, not a crash.
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				res = macResult{err: fmt.Errorf("%w: source file changed while being read (%v)", ErrInvalid, r)}
			}
		}()
		done := 0 // hashed and released: the hash faults pages back in behind the CRCs' releases
		for off := 0; off < len(data); off += macStep {
			if m.stop.Load() {
				res.err = fmt.Errorf("%w: MAC abandoned", ErrCanceled)
				return
			}
			end := min(off+macStep, len(data))
			h.Write(data[off:end])
			if release && (end-done >= releaseBatch || end == len(data)) {
				releasePages(data, int64(done), int64(end-done))
				done = end
			}
		}
		res.sum = h.Sum(nil)
	}()
	return m, nil
}

// result waits for the source's MAC.
func (m *sourceMAC) result() ([]byte, error) {
	r := <-m.sum
	m.sum <- r // later calls see it too
	return r.sum, r.err
}

// abandon stops the hashing and waits for it: afterwards the mapping it
// reads may be unmapped.
func (m *sourceMAC) abandon() {
	if m != nil {
		m.stop.Store(true)
		m.result()
	}
}

// checkMAC compares the source's MAC (from Commit) with the destination's
// over the bytes it is about to commit; it is called once no data channel
// can write them any more. Without a key from Prepare there is nothing to check.
func (in *incoming) checkMAC(sent []byte) (checked bool, err error) {
	if in.macKey == nil {
		return false, nil
	}
	if len(sent) != MACLen {
		return false, fmt.Errorf("%w: Prepare asked for a whole-file MAC, and Commit carries %d bytes of it (want %d)", ErrInvalid, len(sent), MACLen)
	}
	h, err := blake3.NewKeyed(in.macKey)
	if err != nil {
		return false, err
	}
	f, base := in.dest.File(), in.dest.Base()
	buf := make([]byte, min(max(in.plan.Size, 1), 1<<20))
	for at := int64(0); at < in.plan.Size; {
		k, err := f.ReadAt(buf[:min(in.plan.Size-at, int64(len(buf)))], base+at)
		if k == 0 && err != nil {
			return false, fmt.Errorf("%w: reading the destination back for the MAC: %w", ErrCorrupt, err)
		}
		h.Write(buf[:k])
		at += int64(k)
	}
	if !hmac.Equal(h.Sum(nil), sent) {
		return false, fmt.Errorf("%w: the whole-file keyed BLAKE3 (--verify mac) of the bytes received differs from the source's: they were altered on the data path; nothing was committed", ErrCorrupt)
	}
	return true, nil
}

// validMACKey checks the key a Prepare carries.
func validMACKey(key []byte) error {
	if key != nil && len(key) != MACKeyLen {
		return fmt.Errorf("%w: a %d-byte MAC key (want %d)", ErrInvalid, len(key), MACKeyLen)
	}
	return nil
}

// verifyOf is the mode a Prepare asks for.
func verifyOf(key []byte) VerifyMode {
	if key != nil {
		return VerifyMAC
	}
	return VerifyCRC
}
