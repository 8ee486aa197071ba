package devo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Backoff is an exponential backoff: the n-th wait is Initial·2ⁿ capped at Max, with full jitter
// over its upper half (a wait of d is drawn from [d/2, d]). The zero value waits from 1 s to 60 s.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// Wait returns the wait before retry number attempt (0 for the first retry).
func (b Backoff) Wait(attempt int) time.Duration {
	initial, maxWait := b.Initial, b.Max
	if initial <= 0 {
		initial = time.Second
	}
	if maxWait <= 0 {
		maxWait = time.Minute
	}
	maxWait = max(maxWait, initial)
	d := initial
	for i := 0; i < attempt && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	half := d / 2
	return half + rand.N(d-half+1)
}

// Retry sends b on out until it is delivered, waiting per backoff between attempts and logging
// each failure at warn level. It never gives up on a batch: it returns nil once Send succeeds, the
// context's error (wrapped) when ctx ends first, and at once an error wrapping ErrInvalidTag,
// which no retry can fix. A nil logger discards the logs.
func Retry(ctx context.Context, out Output, b *Batch, backoff Backoff, logger *slog.Logger) error {
	return RetryGrace(ctx, 0, out, b, backoff, logger)
}

// RetryGrace is Retry for a graceful stop: when ctx ends during an attempt, that attempt may go
// on for up to grace before its connection is cut, so a batch that Devo is already reading is
// confirmed rather than left half-sent (to be sent again, whole, after a restart). No attempt
// starts after ctx ended. RetryGrace returns nil when that last attempt succeeded.
func RetryGrace(ctx context.Context, grace time.Duration, out Output, b *Batch, backoff Backoff, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	actx := ctx
	if grace > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		stop := context.AfterFunc(ctx, func() {
			t := time.AfterFunc(grace, cancel)
			context.AfterFunc(actx, func() { t.Stop() })
		})
		defer stop()
	}
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return fmt.Errorf("delivering %d events of %s to output %s: %w", len(b.Events), b.Tag, out.Name(), ctx.Err())
		}
		err := out.Send(actx, b)
		if err == nil {
			if attempt > 0 {
				logger.Info("batch delivered after retries", "output", out.Name(), "tag", b.Tag,
					"events", len(b.Events), "attempts", attempt+1)
			}
			return nil
		}
		if errors.Is(err, ErrInvalidTag) {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("delivering %d events of %s to output %s: %w", len(b.Events), b.Tag, out.Name(), cerr)
		}
		wait := backoff.Wait(attempt)
		logger.Warn("delivering a batch failed; retrying", "output", out.Name(), "tag", b.Tag,
			"events", len(b.Events), "attempt", attempt+1, "retry_in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("delivering %d events of %s to output %s: %w (last error: %v)",
				len(b.Events), b.Tag, out.Name(), ctx.Err(), err)
		case <-t.C:
		}
	}
}
