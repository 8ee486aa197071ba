package status

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// paceStale is how old a worker's pacing record may be and still count: several of the workers'
// write periods (5 s), so one slow write does not drop a live worker from the sum.
const paceStale = 30 * time.Second

// Pacing is the fleet's adaptive pacing of one input: the sums over the worker processes whose
// pacing record is recent.
type Pacing struct {
	Input string `json:"input"`
	// Ceiling is the input's requests_per_second, the fleet-wide ceiling.
	Ceiling float64 `json:"ceiling_requests_per_second"`
	Workers int     `json:"workers"`
	// Limit is the sum of the workers' adaptive limits of requests in flight; Max the sum of
	// their upper bounds (workers.concurrency); InFlight the requests in flight when written.
	Limit    int `json:"limit"`
	Max      int `json:"max"`
	InFlight int `json:"in_flight"`
	// FloorMS is the least latency floor the workers observed, in ms (0: no answer yet).
	FloorMS int64 `json:"latency_floor_ms"`
	// ExpectedRPS is the pace the fleet can keep: the ceiling, or Limit requests per floor
	// latency if that is less (0 when the floor is unknown).
	ExpectedRPS float64 `json:"expected_requests_per_second"`
	// Bound names what holds the pace: requests_per_second (the ceiling), workers.concurrency
	// (every worker at its bound), or appliance (the latency keeps the limit below its bound).
	Bound string `json:"bound,omitempty"`
}

// Pace returns the expected requests per second and what bounds it, for a fleet whose adaptive
// limits sum to limit of max, at a latency floor and a ceiling (requests_per_second). With no
// floor measured yet the expectation is unknown (0, "").
func Pace(ceiling float64, limit, max int, floor time.Duration) (float64, string) {
	if floor <= 0 || limit <= 0 {
		return 0, ""
	}
	byConc := float64(limit) / floor.Seconds()
	switch {
	case ceiling > 0 && byConc >= ceiling:
		return ceiling, "requests_per_second"
	case limit >= max:
		return byConc, "workers.concurrency"
	default:
		return byConc, "appliance"
	}
}

// readPacing sums the recent pacing records of cfg's enabled inputs from the rate bucket.
func readPacing(ctx context.Context, kv jetstream.KeyValue, cfg *config.Config, now time.Time) ([]Pacing, error) {
	by := map[string]*Pacing{}
	var order []string
	for _, name := range cfg.EnabledInputs() {
		by[name] = &Pacing{Input: name, Ceiling: cfg.Inputs[name].RequestsPerSecond}
		order = append(order, name)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, fmt.Errorf("listing bucket %s: %w", proto.BucketRate, err)
	}
	var keys []string
	if err == nil {
		for k := range lister.Keys() {
			if strings.HasPrefix(k, proto.PaceKeyPrefix) {
				keys = append(keys, k)
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("listing bucket %s: %w", proto.BucketRate, err)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		in, ok := proto.PaceInput(k)
		p := by[in]
		if !ok || p == nil {
			continue
		}
		rec, err := get[proto.Pace](ctx, kv, k)
		if err != nil {
			return nil, err
		}
		if rec == nil || now.Sub(time.UnixMilli(rec.At)) > paceStale {
			continue // a worker that stopped without deleting its record
		}
		p.Workers++
		p.Limit += rec.Limit
		p.Max += rec.Max
		p.InFlight += rec.InFlight
		if rec.FloorMS > 0 && (p.FloorMS == 0 || rec.FloorMS < p.FloorMS) {
			p.FloorMS = rec.FloorMS
		}
	}
	out := make([]Pacing, 0, len(order))
	for _, name := range order {
		p := by[name]
		p.ExpectedRPS, p.Bound = Pace(p.Ceiling, p.Limit, p.Max, time.Duration(p.FloorMS)*time.Millisecond)
		out = append(out, *p)
	}
	return out, nil
}

// String says how one input is paced, for people.
func (p Pacing) String() string {
	if p.Workers == 0 {
		return fmt.Sprintf("%s: ceiling %g requests/s; no worker has reported its pacing yet", p.Input, p.Ceiling)
	}
	s := fmt.Sprintf("%s: ceiling %g requests/s; %d worker(s), adaptive limit %d of at most %d in flight (%d now)",
		p.Input, p.Ceiling, p.Workers, p.Limit, p.Max, p.InFlight)
	if p.FloorMS == 0 {
		return s + ", no answer measured yet"
	}
	s += fmt.Sprintf(", latency floor %d ms: about %.3g requests/s", p.FloorMS, p.ExpectedRPS)
	switch p.Bound {
	case "requests_per_second":
		s += " (the ceiling binds: raise requests_per_second if the appliance takes more)"
	case "workers.concurrency":
		s += " (every worker is at its bound: raise workers.concurrency, or add workers)"
	case "appliance":
		s += " (the appliance's latency holds the limit below its bound)"
	}
	return s
}
