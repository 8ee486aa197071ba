package darktrace

import (
	"cmp"
	"math/rand/v2"
	"time"
)

// Default backoff bounds, used for a zero Backoff field.
const (
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 30 * time.Second
)

// Backoff is exponential backoff with full jitter, indexed by attempt number rather than held as
// per-operation state: the worker asks it for the delay before redelivering a message, knowing
// only how often the message was delivered (JetStream's NumDelivered), so the same Backoff value
// serves every message at once. (A stateful iterator such as cenkalti/backoff's
// ExponentialBackOff does not fit that; nor does its jitter, which can exceed its cap.) Zero fields
// take DefaultBackoffBase and DefaultBackoffMax.
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
