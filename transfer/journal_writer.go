package transfer

import (
	"log/slog"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// journalInterval is how long verified chunks wait to be journaled at
// most (plus one fdatasync): a group commit, so that the cost of syncing is
// paid once for every chunk verified meanwhile and throughput holds. A
// crash of the receiving daemon resends at most what was verified in it.
const journalInterval = 50 * time.Millisecond

// journalWriter appends records to a partial file's journal in group
// commits: fdatasync the partial file (every range verified so far is then
// durable), then append one record per chunk in one write and fdatasync the
// journal. A record is thus never durable before its chunk's bytes.
type journalWriter struct {
	data *os.File // the partial file
	file *os.File // the journal, O_APPEND
	seed uint32   // the header's CRC32C, seeds each record's check
	log  *slog.Logger
	// syncfs: data is a tree's root directory, and its files' bytes are
	// made durable with syncfs (one call for all of them).
	syncfs bool

	mu      sync.Mutex
	pending []JournalRecord
	failed  bool // a sync or write failed: journaling stopped, the transfer goes on

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// newJournalWriter starts journaling for data into file (open for
// appending, its header written); close stops it.
func newJournalWriter(data, file *os.File, seed uint32, log *slog.Logger) *journalWriter {
	w := &journalWriter{data: data, file: file, seed: seed, log: log,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// add queues the record of a chunk that was verified.
func (w *journalWriter) add(r JournalRecord) {
	w.mu.Lock()
	if !w.failed {
		w.pending = append(w.pending, r)
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *journalWriter) run() {
	defer close(w.done)
	var last time.Time
	for {
		select {
		case <-w.kick:
		case <-w.stop:
			return
		}
		if wait := journalInterval - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-w.stop:
				t.Stop()
				return
			}
		}
		last = time.Now()
		w.commit()
	}
}

// commit journals every pending record.
func (w *journalWriter) commit() {
	w.mu.Lock()
	recs := w.pending
	w.pending = nil
	w.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	var err error
	if w.syncfs {
		err = unix.Syncfs(int(w.data.Fd()))
	} else {
		err = unix.Fdatasync(int(w.data.Fd()))
	}
	if err == nil {
		b := make([]byte, 0, len(recs)*journalRecLen)
		for _, r := range recs {
			b = AppendJournalRecord(b, w.seed, r)
		}
		if _, err = w.file.Write(b); err == nil {
			err = unix.Fdatasync(int(w.file.Fd()))
		}
	}
	if err != nil {
		w.mu.Lock()
		w.failed, w.pending = true, nil
		w.mu.Unlock()
		w.log.Warn("chunk journal stopped: the transfer goes on, but a resume after a failure sends its later chunks again", "journal", w.file.Name(), "err", err)
	}
}

// close stops the writer; with flush, what is pending is journaled first
// (a failed transfer keeps its partial file). It closes the journal file.
func (w *journalWriter) close(flush bool) {
	close(w.stop)
	<-w.done
	if flush {
		w.commit()
	}
	w.file.Close()
}
