package transfer

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
)

// The chunk scheduler of a push: it hands chunks to one transport after
// the other and collects their verdicts.

// transportSend moves the chunks it takes from queue and reports each one's
// verdict through done (the contract of fallback.Send).
type transportSend func(ctx context.Context, queue <-chan chunk.Chunk, done func(chunk.Chunk, error)) error

// scheduler hands out chunks and collects verdicts across transports: a
// chunk that failed on a broken transport is queued again for the next one.
// CRCs are computed from a read-only mapping of the source just before each
// chunk is first queued, so checksumming overlaps sending and reads no byte
// twice from disk.
type scheduler struct {
	plan     ChunkPlan
	data     []byte   // read-only mapping of the source, from base
	base     int64    // offset in the source of data[0]; chunks carry source offsets
	crcs     []uint32 // CRC32C of each chunk, filled as chunks are first queued
	allAcked chan struct{}
	retry    chan struct{} // a chunk was added to retries
	// resumed are the chunks the destination holds (their CRC32C): they
	// are checked against the source's bytes and counted, never sent.
	resumed map[uint32]uint32
	// release says when a chunk's pages of the mapping are dropped
	// (releasePages): releaseNever for registered memory, releaseAfterCRC
	// when only TCP reads the source (sendfile reads the page cache, not
	// the mapping), releaseAfterAck when RDMA copies from the mapping.
	release releaseWhen
	relDone int64 // the mapping's bytes released so far: a prefix
	relNext int   // after-ack mode: the first chunk not yet in that prefix
	// crcOf, when set, reads chunk i's bytes (a tree's, from its files)
	// and returns their CRC32C; data is nil then.
	crcOf func(i int, off, n int64) (uint32, error)

	mu       sync.Mutex
	acked    []bool
	attempts []int
	nAcked   int
	next     int // first position in order never queued
	retries  []chunk.Chunk
	// order, when set, is the order chunks are first queued in (else
	// 0, 1, ...): see stridedOrder.
	order []int
}

// stridedOrder returns chunks 0..n-1 cut into k runs and interleaved (the
// first chunk of each run, then the second of each, ...). The streams of a
// tree with files larger than a chunk then write far apart, in different
// files: in consecutive order they all wrote the same big file and queued
// on its inode's lock (a mixed 2 GiB tree: the destination's CPU 5-10%
// lower interleaved). A tree of small files keeps the plain order, which
// measured cheaper for it (files created in one directory after another).
func stridedOrder(n, k int) []int {
	if k < 2 || n <= k {
		return nil
	}
	order := make([]int, 0, n)
	for j := 0; len(order) < n; j++ {
		for r := range k {
			if lo, hi := n*r/k, n*(r+1)/k; lo+j < hi {
				order = append(order, lo+j)
			}
		}
	}
	return order
}

// releaseWhen is when a scheduler drops a chunk's pages of the mapping.
type releaseWhen int

const (
	releaseNever releaseWhen = iota
	releaseAfterCRC
	releaseAfterAck
)

// releaseBatch is how many bytes of the mapping a scheduler (or the source's
// MAC, which reads it too) drops at once, a default chunk. Each release
// flushes the TLB of every CPU the daemon runs on (IPIs, costly in a VM),
// but larger batches let many concurrent copies hold their chunks at once:
// with 32 or 64 MiB batches make bench's 64 concurrent 16 MiB copies took
// the source's peak RSS to 156-186 MiB, per chunk it was 85 MiB, and
// interleaved 1 GiB copies did not tell the two apart beyond noise.
const releaseBatch = 8 << 20

// releaseUpTo drops the mapping's pages below end once a batch of them is
// done with, or all of them at the end.
func (s *scheduler) releaseUpTo(end int64) {
	if end-s.relDone >= releaseBatch || (end == s.plan.Size && end > s.relDone) {
		releasePages(s.data, s.relDone, end-s.relDone)
		s.relDone = end
	}
}

// newScheduler schedules plan's chunks; data is the source's read-only
// mapping, base the source's offset of data[0].
func newScheduler(plan ChunkPlan, data []byte, base int64) *scheduler {
	count := plan.Count()
	return &scheduler{plan: plan, data: data, base: base, crcs: make([]uint32, count), acked: make([]bool, count),
		attempts: make([]int, count), allAcked: make(chan struct{}), retry: make(chan struct{}, 1)}
}

// verified returns how many chunks the destination verified.
func (s *scheduler) verified() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nAcked
}

// requeue puts c back for sending; the caller holds s.mu.
func (s *scheduler) requeue(c chunk.Chunk) {
	s.retries = append(s.retries, c)
	select {
	case s.retry <- struct{}{}:
	default:
	}
}

// transportBroken ends one transport's attempt: its unacknowledged chunks
// were requeued and another transport may finish the job.
type transportBroken struct{ cause error }

func (e *transportBroken) Error() string { return e.cause.Error() }
func (e *transportBroken) Unwrap() error { return e.cause }

// attempt runs one transport until every chunk is verified (nil), a chunk
// fails verification for good (ErrCorrupt), the transport breaks (an error
// *transportBroken) or ctx ends.
func (p *push) attempt(ctx context.Context, send transportSend) error {
	s := p.sched
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	broken := make(chan struct{})
	var brokenOnce sync.Once
	var brokenErr error
	done := func(c chunk.Chunk, err error) {
		if errors.Is(err, chunk.ErrAlreadyVerified) {
			// An earlier send of it (over the other transport, say) was
			// verified, with the same CRC: the chunk is done.
			err = nil
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		switch {
		case s.acked[c.Index]:
		case err == nil:
			s.acked[c.Index] = true
			s.nAcked++
			p.rec.mu.Lock()
			if p.tree != nil {
				done, last := p.tree.verified(p.plan, int(c.Index))
				p.rec.info.FilesDone = done
				if last != "" {
					p.rec.info.CurrentFile = last
				}
			}
			p.rec.info.BytesDone += int64(c.Length)
			if secs := time.Since(p.rec.info.Started).Seconds(); secs > 0 {
				p.rec.info.Rate = float64(p.rec.info.BytesDone-p.rec.info.ResumedBytes) / secs
			}
			p.rec.mu.Unlock()
			if s.release == releaseAfterAck {
				for s.relNext < len(s.acked) && s.acked[s.relNext] {
					s.relNext++
				}
				if s.relNext > 0 {
					off, n := s.plan.Span(s.relNext - 1)
					s.releaseUpTo(off + n)
				}
			}
			if s.nAcked == len(s.acked) {
				close(s.allAcked)
			}
			p.emitters.Go(p.maybeEmit)
		case errors.Is(err, chunk.ErrChecksum) && s.attempts[c.Index] < maxChunkAttempts:
			p.node.logger(p.rec).Warn("chunk failed verification at the destination; resending", "chunk", c.Index, "attempt", s.attempts[c.Index])
			s.requeue(c)
		case errors.Is(err, chunk.ErrChecksum):
			cancel(fmt.Errorf("%w: chunk %d%s failed CRC32C verification %d times", ErrCorrupt, c.Index, p.where(c), s.attempts[c.Index]))
		case errors.Is(err, chunk.ErrInFlight) && s.attempts[c.Index] < maxInFlightAttempts:
			// A send of it the source gave up on (its transport broke) is
			// still landing at the destination: send it again.
			s.requeue(c)
		case errors.Is(err, chunk.ErrInFlight):
			cancel(fmt.Errorf("%w: the destination still had chunk %d in flight after %d sends", ErrTimeout, c.Index, s.attempts[c.Index]))
		case errors.Is(err, chunk.ErrReceiverIO):
			// No transport can fix it: most often the destination's disk is
			// full. Its verified chunks stay for a resume.
			cancel(fmt.Errorf("%w: the destination could not write chunk %d%s (its file system is full or failing); free space there and copy again to resume", ErrNoSpace, c.Index, p.where(c)))
		default:
			s.requeue(c) // lost with its transport; the next transport sends it
			brokenOnce.Do(func() { brokenErr = err; close(broken) })
		}
	}
	queue := make(chan chunk.Chunk, 2*p.rec.info.Streams)
	feedErr := make(chan error, 1)
	go func() { feedErr <- p.feed(ctx, queue, broken, done) }()
	sendDone := done
	if p.tree != nil {
		// The chunk's files stay open until its verdict (chunk.Layout).
		sendDone = func(c chunk.Chunk, err error) { done(c, err); p.tree.release(c.Index) }
	}
	sendErr := send(ctx, queue, sendDone)
	ferr := <-feedErr
	select {
	case <-s.allAcked:
		return nil // every chunk is verified; a stream that broke afterwards lost nothing
	default:
	}
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	if ferr != nil {
		return ferr
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if brokenErr == nil {
		brokenErr = sendErr
	}
	if brokenErr == nil {
		brokenErr = errors.New("the transport stopped with chunks unacknowledged")
	}
	return &transportBroken{dataChannelErr(brokenErr)}
}

// feed queues chunks (resends first) until all are acknowledged, the
// transport broke or ctx ended, then closes queue. A chunk the destination
// resumes is checked and answered through done instead of queued.
func (p *push) feed(ctx context.Context, queue chan<- chunk.Chunk, broken <-chan struct{}, done func(chunk.Chunk, error)) (err error) {
	s := p.sched
	defer close(queue)
	// A source truncated under us faults the mapping: report it instead of crashing.
	debug.SetPanicOnFault(true)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: source file changed while being read (%v)", ErrInvalid, r)
		}
	}()
	for {
		s.mu.Lock()
		var c chunk.Chunk
		have := len(s.retries) > 0
		if have {
			c, s.retries = s.retries[0], s.retries[1:]
		} else if s.next < len(s.crcs) {
			i := s.next
			if s.order != nil {
				i = s.order[i]
			}
			s.next++
			s.mu.Unlock()
			off, n := s.plan.Span(i)
			if s.crcOf != nil {
				sum, err := s.crcOf(i, s.base+off, n)
				if err != nil {
					return err
				}
				s.crcs[i] = sum
			} else {
				// The pages a CRC faults in stay mapped until released:
				// with 64 copies checksumming at once the source's peak RSS
				// went from 61 to 145 MiB by scheduling alone. At most one
				// chunk a CPU is read from a mapping at a time, node-wide.
				func() {
					p.node.mapReads <- struct{}{}
					defer func() { <-p.node.mapReads }() // a fault (a source truncated) panics through here
					s.crcs[i] = crc32c.Checksum(s.data[off : off+n])
					if s.release == releaseAfterCRC {
						s.releaseUpTo(off + n) // chunks are first queued in order
					}
				}()
			}
			c = chunk.Chunk{Index: uint32(i), Offset: s.base + off, Length: uint32(n), CRC: s.crcs[i]}
			if held, ok := s.resumed[c.Index]; ok {
				if held != c.CRC {
					return fmt.Errorf("%w: chunk %d of the destination's partial file (CRC32C %08x) is not the source's (%08x) although size, mtime and inode match; the partial file is discarded, copy again",
						ErrSourceChanged, i, held, c.CRC)
				}
				p.rec.mu.Lock()
				p.rec.info.ResumedBytes += n
				p.rec.mu.Unlock()
				done(c, nil)
				continue
			}
			s.mu.Lock()
			have = true
		}
		if have {
			s.attempts[c.Index]++
			c.CRC = s.crcs[c.Index] // a resend of a corrupted chunk carries the true CRC again
			if corrupt := knobs.corruptChunk; corrupt != nil && corrupt(c.Index, s.attempts[c.Index]) {
				c.CRC ^= 1 // as if the bytes were corrupted on the wire
			}
		}
		s.mu.Unlock()
		if !have {
			select {
			case <-s.retry:
				continue
			case <-s.allAcked:
			case <-broken:
			case <-ctx.Done():
			}
			return nil
		}
		select {
		case queue <- c:
		case <-broken:
			s.mu.Lock()
			s.attempts[c.Index]--
			s.requeue(c)
			s.mu.Unlock()
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}
