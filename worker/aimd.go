package worker

import (
	"net/http"
	"time"

	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// The adaptive concurrency limit follows TCP's congestion control, with TCP Vegas's use of the
// latency as the early signal (the reasoning of Netflix's concurrency-limits): the appliance's
// latency floor (its answer when it is not loaded) is the reference; while answers come close to
// it, more requests in flight cost nothing and the limit grows; when the latency rises well above
// it, requests queue inside the appliance and the limit shrinks; a 429, a 5xx or a request
// without an answer shrinks it hard.
const (
	// latencyTolerance is how far above the floor the latency may rise before the limit shrinks:
	// at twice the floor, half of each request's time is spent queueing in the appliance.
	latencyTolerance = 2.0
	// latencySlack is the least rise over the floor that counts: an appliance answering in a
	// few milliseconds doubles its latency on a scheduler's hiccup, which is no queue worth
	// backing off from.
	latencySlack = 50 * time.Millisecond
	// latencyBackoff and errorBackoff are the multiplicative decreases on a latency rise and on
	// an overload answer (429, 5xx, no answer).
	latencyBackoff = 0.8
	errorBackoff   = 0.5
	// recoverShare is the share of the limit that was too much to which the limit returns
	// quickly after a decrease (TCP CUBIC's fast return towards its last maximum): the
	// appliance served nearly that many in flight a round trip ago, so climbing back one request
	// per round trip from half of it would leave the appliance idle for dozens of round trips
	// after every 429 (the bench's load-sensitive appliance: 0.79 of the best fixed concurrency).
	recoverShare = 0.9
	// floorWindow is how long a latency floor is remembered: the floor is the least latency of
	// the current and the previous window, so an appliance that became slower for good (bigger
	// data, another tenant) is re-measured within two windows, while a spell of load does not
	// lift the floor at once.
	floorWindow = 5 * time.Minute
	// smoothing is the weight of a new latency in the recent latency (an exponentially weighted
	// mean) that is compared with the floor: one slow answer of a jittery appliance is not a
	// queue, a run of them is.
	smoothing = 0.2
)

// aimd is the adaptive concurrency limit of one input in one process: additive increase,
// multiplicative decrease, with a slow start (the limit doubles each round trip) until the first
// decrease, and after each decrease a fast return (one more per answer) to recoverShare of the
// limit that was too much. It is not safe for concurrent use; pacer serialises it. Its time is what the caller
// passes (the worker's clock), so it is tested on a fake clock.
type aimd struct {
	min, max  int
	limit     float64
	slowStart bool
	recover   float64 // after a decrease, the limit grows by one per answer up to this

	recent     float64       // the smoothed latency of the latest answers, ns; 0: none yet
	floor      time.Duration // least latency of the current and previous window; 0: none yet
	winMin     time.Duration // least latency of the current window; 0: none yet
	prevMin    time.Duration
	winStart   time.Time
	lastDecr   time.Time // when the limit last shrank: requests sent before it do not shrink it again
	lastReason string
}

// newAIMD returns a limit between lo and hi (lo <= hi, both at least 1) that starts at lo.
func newAIMD(lo, hi int) *aimd {
	lo = max(lo, 1)
	hi = max(hi, lo)
	return &aimd{min: lo, max: hi, limit: float64(lo), slowStart: lo < hi}
}

// cap is the number of requests that may be in flight now.
func (a *aimd) cap() int { return int(a.limit) }

// Decrease reasons, the reason label of dtfleet_worker_pacing_decreases_total.
const (
	reasonLatency   = "latency"
	reasonThrottled = "throttled" // 429
	reasonServer    = "server_error"
	reasonNoAnswer  = "no_answer"
)

// observe learns from one request that ended at now. busy says whether the limit was full when
// the request was admitted: a limit that is not used is not raised (TCP's congestion window
// validation), since its latency says nothing about more requests. It returns the reason when
// the limit shrank, "" otherwise.
func (a *aimd) observe(now time.Time, o darktrace.Outcome, busy bool) string {
	if o.Canceled {
		return ""
	}
	sent := now.Add(-o.Latency)
	var reason string
	switch {
	case o.Failed:
		reason = reasonNoAnswer
	case o.Status == http.StatusTooManyRequests:
		reason = reasonThrottled
	case o.Status >= 500:
		reason = reasonServer
	}
	if reason != "" {
		a.decrease(now, sent, errorBackoff, reason)
		return a.shrunk(reason)
	}
	a.sample(now, o.Latency)
	if a.recent > latencyTolerance*float64(a.floor) && time.Duration(a.recent)-a.floor > latencySlack {
		a.decrease(now, sent, latencyBackoff, reasonLatency)
		return a.shrunk(reasonLatency)
	}
	// The rate ceiling, not the appliance, held this request back (it waited longer for the
	// limiter than the appliance took to answer): more in flight would only queue for it.
	if !busy || o.Queued > o.Latency {
		return ""
	}
	switch {
	case a.slowStart:
		a.limit++
	case a.limit < a.recover:
		a.limit = min(a.limit+1, a.recover)
	default:
		a.limit += 1 / a.limit
	}
	a.limit = min(a.limit, float64(a.max))
	return ""
}

// shrunk returns reason if this observation's decrease happened now (lastReason is set by
// decrease), "" when it was skipped as part of the same round trip.
func (a *aimd) shrunk(reason string) string {
	r := a.lastReason
	a.lastReason = ""
	if r == reason {
		return reason
	}
	return ""
}

// decrease shrinks the limit by factor, once per round trip: a request sent before the last
// decrease saw the old limit's load, so it does not shrink the new one again.
func (a *aimd) decrease(now, sent time.Time, factor float64, reason string) {
	a.slowStart = false
	if !a.lastDecr.IsZero() && sent.Before(a.lastDecr) {
		return
	}
	a.recover = a.limit * recoverShare
	a.limit = max(a.limit*factor, float64(a.min))
	a.lastDecr = now
	a.lastReason = reason
}

// sample records a latency in the floor's windows.
func (a *aimd) sample(now time.Time, d time.Duration) {
	if d <= 0 {
		d = time.Microsecond // a zero floor would make every later answer a rise
	}
	if a.winStart.IsZero() {
		a.winStart = now
	}
	if now.Sub(a.winStart) >= floorWindow {
		a.prevMin, a.winMin, a.winStart = a.winMin, 0, now
	}
	if a.winMin == 0 || d < a.winMin {
		a.winMin = d
	}
	a.floor = a.winMin
	if a.prevMin > 0 && a.prevMin < a.floor {
		a.floor = a.prevMin
	}
	if a.recent == 0 {
		a.recent = float64(d)
	} else {
		a.recent += smoothing * (float64(d) - a.recent)
	}
}
