package darktrace

import (
	"context"
	"math"

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
