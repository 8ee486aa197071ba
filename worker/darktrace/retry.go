package darktrace

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Default backoff bounds, used for a zero Backoff field.
const (
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
)

// Backoff is exponential backoff with full jitter. Zero fields take DefaultBackoffBase and
// DefaultBackoffMax.
type Backoff struct {
	// Base is the ceiling of the first retry's delay.
	Base time.Duration
	// Max caps every delay.
	Max time.Duration
}

// Delay returns the delay before retry number attempt (1 for the first retry): a uniformly random
// duration in [0, min(Max, Base·2^(attempt-1))]. Attempts below 1 count as 1. It is safe for
// concurrent use.
func (b Backoff) Delay(attempt int) time.Duration {
	base := cmp.Or(b.Base, DefaultBackoffBase)
	ceiling := max(cmp.Or(b.Max, DefaultBackoffMax), base)
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// FetchWithRetry is Fetch repeated on Retryable failures, up to maxAttempts attempts in all
// (values below 1 mean 1), waiting the client's Backoff delay or the appliance's Retry-After,
// whichever is longer, between attempts. Every failed attempt that will be retried is logged at
// WARN with the seed's PullError message.
//
// Because events stream to fn as they are read, an attempt that fails midway has already passed
// some events to fn, and the next attempt passes them again from the start. onAttempt, when not
// nil, is called before every attempt with its number (1, 2, …): a caller that collects events
// must discard what it collected when onAttempt is called with a number above 1. A nil onAttempt
// is only right when fn is idempotent (for example, when it de-duplicates by event key).
//
// The returned Stats describe the last attempt, with Attempts set and Duration covering every
// attempt and wait. The error is the last attempt's, or the context's when ctx ends while
// waiting. An error returned by fn stops at once and is returned, as from Fetch.
func (c *Client) FetchWithRetry(ctx context.Context, req Request, fn func(raw []byte) error, maxAttempts int, onAttempt func(attempt int)) (Stats, error) {
	maxAttempts = max(maxAttempts, 1)
	t0 := time.Now()
	for attempt := 1; ; attempt++ {
		if onAttempt != nil {
			onAttempt(attempt)
		}
		st, err := c.Fetch(ctx, req, fn)
		st.Attempts = attempt
		st.Duration = time.Since(t0)
		if err == nil || !IsRetryable(err) || attempt >= maxAttempts || ctx.Err() != nil {
			return st, err
		}
		delay := max(c.backoff.Delay(attempt), RetryAfter(err))
		c.logger.Warn(PullErrorMessage(err),
			"pull_error", PullErrorID(err), "service", req.Service, "kind", KindOf(err).String(),
			"attempt", attempt, "max_attempts", maxAttempts, "retry_in", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			st.Duration = time.Since(t0)
			var last *Error
			errors.As(err, &last) // a Retryable error is always a *Error
			return st, newError(KindCanceled, last.Endpoint, 0, "canceled while waiting to retry after: "+last.msg, ctx.Err())
		case <-t.C:
		}
	}
}
