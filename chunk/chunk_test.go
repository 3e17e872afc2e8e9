package chunk

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestVerdict(t *testing.T) {
	c := Chunk{Index: 7}
	for _, tc := range []struct {
		s    Status
		want error
	}{{StatusOK, nil}, {StatusChecksum, ErrChecksum}, {StatusIO, ErrReceiverIO}, {StatusRejected, ErrRejected},
		{StatusVerified, ErrAlreadyVerified}, {StatusInFlight, ErrInFlight}} {
		err := Verdict(c, tc.s)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("Verdict(status %d) = %v, want %v", tc.s, err, tc.want)
		}
		if !tc.s.Valid() {
			t.Errorf("status %d not valid", tc.s)
		}
		if tc.want != nil && tc.s != StatusChecksum && tc.s != StatusIO {
			if got := RefusalStatus(fmt.Errorf("admit: %w", tc.want)); got != tc.s {
				t.Errorf("RefusalStatus(%v) = %d, want %d", tc.want, got, tc.s)
			}
		}
	}
	if Status(6).Valid() {
		t.Error("status 6 valid")
	}
	if got := RefusalStatus(errors.New("out of range")); got != StatusRejected {
		t.Errorf("RefusalStatus of another error = %d, want StatusRejected", got)
	}
}

func TestDrain(t *testing.T) {
	broken := errors.New("broken")
	chunks := make(chan Chunk, 3)
	chunks <- Chunk{Index: 1}
	chunks <- Chunk{Index: 2}
	close(chunks)
	var got []error
	if err := Drain(context.Background(), chunks, func(_ Chunk, err error) { got = append(got, err) }, broken); err != nil {
		t.Fatalf("Drain of a closed channel: %v", err)
	}
	if len(got) != 2 || !errors.Is(got[0], broken) || !errors.Is(got[1], broken) {
		t.Fatalf("answers %v, want two wrapping %v", got, broken)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Drain(ctx, make(chan Chunk), func(Chunk, error) {}, broken); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain after cancel: %v, want context.Canceled", err)
	}
}
