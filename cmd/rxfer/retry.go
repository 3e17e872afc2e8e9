package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Retries of `rxfer cp`: a copy that fails for a reason that can pass (a
// node unreachable or restarting, a connection reset, a source that changed
// under a resume) is run again after a backoff. Each attempt resumes from
// what the destination verified, so a retry costs only the missing bytes.

// DefaultRetries is `rxfer cp --retries`'s default.
const DefaultRetries = 3

// maxBackoff caps the wait between attempts (1 s, 2 s, 4 s, ... 30 s).
const maxBackoff = 30 * time.Second

// retryable reports whether a failed attempt may succeed when run again.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.Aborted:
			return true
		}
		err = errors.New(st.Message())
	}
	msg := err.Error()
	return strings.Contains(msg, "connection reset") || strings.Contains(msg, "connection refused") || strings.Contains(msg, "broken pipe")
}

// backoff is the wait after failed attempt n (1-based).
func backoff(n int) time.Duration {
	return min(time.Second<<min(n-1, 5), maxBackoff)
}

// withRetries runs copyOnce until it succeeds, fails for good, or retries
// more attempts failed; rep shows every attempt and the cause of each retry.
func withRetries(ctx context.Context, retries int, rep reporter, copyOnce func() error) error {
	for attempt := 1; ; attempt++ {
		rep.attempt(attempt)
		err := copyOnce()
		if err == nil || attempt > retries || !retryable(err) || ctx.Err() != nil {
			if err != nil && attempt > 1 {
				return fmt.Errorf("attempt %d of %d: %w", attempt, retries+1, err)
			}
			return err
		}
		wait := backoff(attempt)
		rep.retry(attempt, describe(err), wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}
