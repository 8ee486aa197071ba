package darktrace

import (
	"context"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Limiter paces requests to the appliance. Wait blocks until one more request may be sent, or
// returns ctx's error. The client calls it before every request, retries included; the fleet
// passes a limiter shared by every process so that requests_per_second holds fleet-wide.
type Limiter interface {
	Wait(ctx context.Context) error
}

// NewLocalLimiter returns a Limiter for a single process that allows rps requests per second,
// spaced evenly (no bursts beyond one request); rps <= 0 means unlimited.
func NewLocalLimiter(rps float64) Limiter {
	if rps <= 0 || math.IsInf(rps, 1) || math.IsNaN(rps) {
		return unlimited{}
	}
	return rate.NewLimiter(rate.Limit(rps), 1)
}

// unlimited is a Limiter that never waits.
type unlimited struct{}

// Wait returns ctx's error, if any, without waiting.
func (unlimited) Wait(ctx context.Context) error { return ctx.Err() }

// Pacer bounds how many requests are in flight to the appliance and learns from their answers.
// Acquire blocks until one more request may be in flight, or returns ctx's error; on success the
// caller must call done exactly once, when the request is over (its body read or abandoned), with
// what the request told it. The client acquires before it waits for the Limiter, so a request
// never holds a rate reservation while it waits for room in flight.
type Pacer interface {
	Acquire(ctx context.Context) (done func(Outcome), err error)
}

// Outcome is what one request tells a Pacer.
type Outcome struct {
	// Latency is the time from sending the request to its response headers, or to its failure:
	// the appliance's own time, without the rate limiter's wait or the body's transfer.
	Latency time.Duration
	// Queued is how long the request waited for the Limiter after the Pacer admitted it.
	Queued time.Duration
	// Status is the response's HTTP status, 0 when none arrived.
	Status int
	// Failed says the request got no response (timeout, reset, refused).
	Failed bool
	// Canceled says the caller gave up (its context ended): the outcome says nothing about the
	// appliance.
	Canceled bool
}
