package fallback

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Limits on what connections that have not authenticated can cost a node.
const (
	// DefaultMaxUnauthenticated caps the data connections that have not
	// presented their preamble: far above what honest senders open at once
	// (DefaultStreams per transfer), far below a process's descriptors.
	DefaultMaxUnauthenticated = 256
	// DefaultLogInterval is how often one kind of refusal is logged at most.
	DefaultLogInterval = 10 * time.Second
)

// ErrReceiverBusy reports that the receiver refused a data connection
// because it is at its cap of unauthenticated connections.
var ErrReceiverBusy = errors.New("fallback: receiver is at its cap of unauthenticated data connections (its serve --max-unauthenticated-conns)")

// logLimiter logs each kind of line at most once per interval. A line after
// a quiet spell says how many of its kind were left out, so a flood of
// refusals costs a line per interval instead of one per connection.
type logLimiter struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time // time.Now; tests set a clock

	mu    sync.Mutex
	kinds map[string]*logKind
}

type logKind struct {
	last       time.Time // when a line of this kind was last logged
	suppressed int       // lines left out since
}

func newLogLimiter(log *slog.Logger, interval time.Duration) *logLimiter {
	return &logLimiter{log: log, interval: interval, now: time.Now, kinds: make(map[string]*logKind)}
}

// Log logs msg with args at level unless a line of kind was logged less
// than an interval ago.
func (ll *logLimiter) Log(level slog.Level, kind, msg string, args ...any) {
	ll.mu.Lock()
	now := ll.now()
	k := ll.kinds[kind]
	if k == nil {
		k = &logKind{}
		ll.kinds[kind] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < ll.interval {
		k.suppressed++
		ll.mu.Unlock()
		return
	}
	suppressed := k.suppressed
	k.last, k.suppressed = now, 0
	ll.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed) // lines of this kind left out since the last one
	}
	ll.log.Log(context.Background(), level, msg, args...)
}
