package devo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
)

// NewBackoff returns the default retry policy of a delivery: exponential from 1 s, doubling, its
// interval capped at 60 s, each wait drawn from [interval/2, 3·interval/2]. It never returns
// backoff.Stop. The policy is stateful and not safe for concurrent use: take one per caller.
func NewBackoff() backoff.BackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     time.Second,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         time.Minute,
	}
}

// RetryGrace sends b on out until it is delivered, waiting between attempts as bo says (it is
// Reset first; nil means NewBackoff()) on clock (nil means the real clock), and logging each
// failure at warn level. It never gives up on a batch: a policy that answers backoff.Stop gets its
// previous wait again. It returns nil once Send succeeds, the context's error (wrapped) when ctx
// ends first, and at once an error wrapping ErrInvalidTag, which no retry can fix. A nil logger
// discards the logs.
//
// grace serves a graceful stop: when ctx ends during an attempt, that attempt may go on for up to
// grace before its connection is cut, so a batch that Devo is already reading is confirmed rather
// than left half-sent (to be sent again, whole, after a restart). No attempt starts after ctx
// ended. RetryGrace returns nil when that last attempt succeeded. A zero grace cuts the attempt
// at once.
func RetryGrace(ctx context.Context, grace time.Duration, out Output, b *Batch, bo backoff.BackOff, clock clockwork.Clock, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if bo == nil {
		bo = NewBackoff()
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	bo.Reset()
	actx := ctx
	if grace > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		stop := context.AfterFunc(ctx, func() {
			t := clock.AfterFunc(grace, cancel)
			context.AfterFunc(actx, func() { t.Stop() })
		})
		defer stop()
	}
	var wait time.Duration
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
		if next := bo.NextBackOff(); next != backoff.Stop {
			wait = next
		}
		logger.Warn("delivering a batch failed; retrying", "output", out.Name(), "tag", b.Tag,
			"events", len(b.Events), "attempt", attempt+1, "retry_in", wait, "error", err)
		t := clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("delivering %d events of %s to output %s: %w (last error: %v)",
				len(b.Events), b.Tag, out.Name(), ctx.Err(), err)
		case <-t.Chan():
		}
	}
}
