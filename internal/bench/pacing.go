package bench

import (
	"context"
	"fmt"
	"math"
	"time"
)

// PacingOptions are the pacing scenario's settings: a load-sensitive appliance (its latency grows
// with the requests in flight, and it answers 429 beyond a number in flight), the adaptive fleet
// on it, and a sweep of fixed concurrencies to find the best fixed one.
type PacingOptions struct {
	Slots              int
	Latency            time.Duration
	LatencyPerInFlight time.Duration
	RateLimitAbove     int
	Sweep              []int
}

// PacingSeen is what a run's adaptive pacing settled at, and what the appliance saw.
type PacingSeen struct {
	// FleetLimit is the sum of the workers' adaptive limits at the end of the run (their last
	// pacing records, written every 5 s), MaxLimit the most seen during it, FleetMax the sum of
	// their bounds.
	FleetLimit  int     `json:"fleet_limit"`
	MaxLimit    int     `json:"max_fleet_limit"`
	FleetMax    int     `json:"fleet_max"`
	FloorMS     int64   `json:"latency_floor_ms"`
	ExpectedRPS float64 `json:"expected_requests_per_second"`
	Bound       string  `json:"bound,omitempty"`
	// ApplianceMaxInFlight is the most requests the fake appliance served at once; Throttled the
	// 429s it answered.
	ApplianceMaxInFlight int64 `json:"appliance_max_in_flight"`
	Throttled            int64 `json:"throttled_429"`
}

// PacingReport compares the adaptive fleet with the best of a sweep of fixed concurrencies on a
// load-sensitive appliance.
type PacingReport struct {
	Adaptive RunResult   `json:"adaptive"`
	Fixed    []RunResult `json:"fixed"`
	// Best is the name of the fastest fixed run; AdaptiveVsBest is its wall time over the
	// adaptive run's (1: as fast as the best fixed concurrency; 0.8: 20 % slower).
	Best               string  `json:"best_fixed"`
	AdaptiveVsBest     float64 `json:"adaptive_vs_best_fixed"`
	LatencyMS          float64 `json:"latency_ms"`
	LatencyPerInFlight float64 `json:"latency_per_in_flight_ms"`
	RateLimitAbove     int     `json:"rate_limit_above"`
}

// runPaced is run, also recording what the pacing settled at: the fleet's pacing records are
// read every half second while the run lasts.
func (r *benchRunner) runPaced(ctx context.Context, spec runSpec) (*RunResult, error) {
	env, err := r.setup(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer env.close()
	seen := &PacingSeen{}
	sample := func(ctx context.Context) {
		if env.running == nil {
			return
		}
		st, err := env.running.Status(ctx)
		if err != nil || len(st.Pacing) == 0 {
			return
		}
		p := st.Pacing[0]
		if p.Workers == 0 {
			return
		}
		seen.FleetLimit, seen.FleetMax, seen.FloorMS, seen.ExpectedRPS, seen.Bound = p.Limit, p.Max, p.FloorMS, p.ExpectedRPS, p.Bound
		seen.MaxLimit = max(seen.MaxLimit, p.Limit)
	}
	res, err := env.measure(ctx, func(ctx context.Context) error {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-env.lastSlot:
				sample(ctx)
				return nil
			case <-t.C:
				sample(ctx)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	seen.ApplianceMaxInFlight, seen.Throttled = env.fake.MaxInFlight(), env.fake.Throttled()
	res.Pacing = seen
	return res, nil
}

// pacing runs the adaptive fleet on a load-sensitive appliance, then each fixed concurrency of
// the sweep (workers.min_concurrency = workers.concurrency), and compares.
func (r *benchRunner) pacing(ctx context.Context) (*PacingReport, error) {
	po := r.o.Pacing
	base := runSpec{name: "pacing-adaptive", slots: po.Slots, eventsPerSlot: float64(r.o.EventsPerSlot), latency: po.Latency,
		workers: r.o.Workers, rps: r.o.RPS, lookBack: r.o.LookBack, latencyPerInFlight: po.LatencyPerInFlight, rateLimitAbove: po.RateLimitAbove}
	ad, err := r.runPaced(ctx, base)
	if err != nil {
		return nil, err
	}
	rep := &PacingReport{Adaptive: *ad, LatencyMS: float64(po.Latency) / float64(time.Millisecond),
		LatencyPerInFlight: float64(po.LatencyPerInFlight) / float64(time.Millisecond), RateLimitAbove: po.RateLimitAbove}
	bestWall := math.Inf(1)
	for _, c := range po.Sweep {
		spec := base
		spec.name, spec.concurrency, spec.minConcurrency = fmt.Sprintf("pacing-fixed-%d", c), c, c
		res, err := r.runPaced(ctx, spec)
		if err != nil {
			return nil, err
		}
		rep.Fixed = append(rep.Fixed, *res)
		if res.WallSeconds < bestWall {
			bestWall, rep.Best = res.WallSeconds, res.Name
		}
	}
	if ad.WallSeconds > 0 && len(rep.Fixed) > 0 {
		rep.AdaptiveVsBest = bestWall / ad.WallSeconds
	}
	return rep, nil
}

// pacingNote says what a run's pacing settled at, for the table's notes.
func pacingNote(name string, p *PacingSeen) string {
	return fmt.Sprintf("%s pacing: settled at %d in flight (most %d, bound %d), latency floor %d ms, expected %.3g requests/s (%s); the appliance saw at most %d in flight, %d answered 429",
		name, p.FleetLimit, p.MaxLimit, p.FleetMax, p.FloorMS, p.ExpectedRPS, orDash(p.Bound), p.ApplianceMaxInFlight, p.Throttled)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ceilingNote compares a backfill with its ceiling's ideal (slots / requests_per_second).
func ceilingNote(res *RunResult, rps float64) string {
	if rps <= 0 || res.WallSeconds <= 0 {
		return ""
	}
	ideal := float64(res.Slots) / rps
	return fmt.Sprintf("backfill ceiling: %g requests/s, ideal %.1fs for %d slots, measured %.2fs: %.0f %% of the ceiling's ideal speed",
		rps, ideal, res.Slots, res.WallSeconds, 100*ideal/res.WallSeconds)
}
