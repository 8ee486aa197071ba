// Package bench runs `dtfleet bench`: the whole fleet in this process (embedded NATS on file
// storage, the real sync policy) against the fake Darktrace appliance and the fake Devo receiver
// over mutual TLS, with extra `dtfleet worker` processes of this binary for the scale scenario,
// and reports what it measured. Every figure is measured; none is computed from the knobs.
//
// It may import internal/fleet, internal/config, internal/status, proto and the test fakes
// (darktracetest, devotest); nothing but cmd/dtfleet imports it.
package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// Scenarios are the scenarios the bench knows, in the order it runs them.
var Scenarios = []string{"backfill", "throughput", "freshness", "memory", "scale", "pacing"}

// ParseScenarios parses a comma-separated list of scenarios, or "all".
func ParseScenarios(list string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "all" {
			return slices.Clone(Scenarios), nil
		}
		if !slices.Contains(Scenarios, s) {
			return nil, fmt.Errorf("unknown scenario %q (known: %s, all)", s, strings.Join(Scenarios, ", "))
		}
		out = append(out, s)
	}
	return out, nil
}

// Options are the bench's settings (the flags of `dtfleet bench`).
type Options struct {
	// Pacing holds the pacing scenario's settings (pacing.go).
	Pacing PacingOptions

	// Scenarios to run, in order (ParseScenarios).
	Scenarios  []string
	Dir        string
	CPUProfile string
	MemProfile string
	Timeout    time.Duration

	// backfill
	Slots         int
	EventsPerSlot int
	Latency       time.Duration
	Jitter        time.Duration
	Concurrency   int
	BaselineSlots int
	Workers       int
	RPS           float64
	Window        time.Duration
	LookBack      time.Duration
	BacklogMB     int // coordinator.max_backlog_in_mb of every run

	// throughput and memory
	EventSize       int
	TPSlots         int
	TPEventsPerSlot int
	TPLatency       time.Duration
	MemoryMB        int

	// freshness
	LiveDuration      time.Duration
	Period            time.Duration
	LiveEventsPerHour float64

	// scale
	ScaleSlots       int
	ScaleLatency     time.Duration
	ScaleConcurrency int
	RateCheckRPS     float64
}

// Machine describes where the bench ran.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
}

// RunResult is what one fleet run measured.
type RunResult struct {
	Name        string  `json:"name"`
	Slots       int     `json:"slots"`
	Workers     int     `json:"workers"`
	Concurrency int     `json:"concurrency"`
	LatencyMS   float64 `json:"latency_ms"`
	// WallSeconds runs from the first appliance request (the bench holds requests until every
	// worker process is up) to the last slot's delivery checkpoint.
	WallSeconds float64 `json:"wall_seconds"`
	// Events are the lines the fake Devo received by the run's end; Expected are the events
	// created in the run's slots (0 for a live run). Events may exceed Expected by the breaches
	// of the slot after the last one, when its lines arrive before the end is read; fewer is a
	// loss.
	Events     int64 `json:"events"`
	Expected   int64 `json:"expected_events"`
	EventBytes int64 `json:"event_bytes"`
	Requests   int64 `json:"requests"`
	// MaxRequestsPerSecond is the most data requests that reached the appliance in any one-second
	// window (timed on arrival, before the start gate).
	MaxRequestsPerSecond int     `json:"max_requests_per_second"`
	EventsPerSecond      float64 `json:"events_per_second"`
	MBPerSecond          float64 `json:"mb_per_second"`
	// CPUSeconds is user+system time of this process (fleet, fake appliance and fake Devo) and
	// of its worker processes during the run.
	CPUSeconds         float64 `json:"cpu_seconds"`
	CPUPerMillionEvent float64 `json:"cpu_seconds_per_million_events"`
	PeakRSSMB          float64 `json:"peak_rss_mb"`
	PeakHeapMB         float64 `json:"peak_heap_mb"`
	// RSSPeakReset says whether VmHWM was reset at the start of the run (otherwise the peak is
	// since the process started).
	RSSPeakReset bool `json:"rss_peak_reset"`
	// Pacing is what the adaptive pacing settled at (backfill and pacing runs).
	Pacing *PacingSeen `json:"pacing,omitempty"`
	// PreRendered counts the data requests answered from the responses rendered before the run
	// and those that missed them (throughput runs without appliance latency or throttling).
	PreRendered *PreRendered `json:"prerendered_responses,omitempty"`
	// FakesCPU is the fakes' share of CPUSeconds, from a CPU profile of the run (throughput runs,
	// unless --cpuprofile profiles the whole bench).
	FakesCPU *FakesCPU `json:"fakes_cpu,omitempty"`
}

// BackfillReport compares the fleet with the sequential baseline.
type BackfillReport struct {
	Fleet    RunResult `json:"fleet"`
	Baseline RunResult `json:"baseline"`
	// BaselineWallSeconds is the baseline's time for all of the fleet's slots: measured when it
	// ran on all of them, extrapolated linearly from its sample otherwise.
	BaselineWallSeconds  float64 `json:"baseline_wall_seconds"`
	BaselineExtrapolated bool    `json:"baseline_extrapolated"`
	Speedup              float64 `json:"speedup"`
	// CeilingRPS is the input's requests_per_second in the fleet's run.
	CeilingRPS float64 `json:"ceiling_requests_per_second"`
}

// FreshnessReport is the live-mode latency from visibility to arrival.
type FreshnessReport struct {
	Run           RunResult `json:"run"`
	PeriodSeconds float64   `json:"period_seconds"`
	Measured      int       `json:"measured_events"`
	Missing       int       `json:"missing_events"`
	P50Seconds    float64   `json:"p50_seconds"`
	P99Seconds    float64   `json:"p99_seconds"`
	MaxSeconds    float64   `json:"max_seconds"`
}

// ScaleReport compares one worker process with two on the same latency-bound backfill.
type ScaleReport struct {
	One     RunResult  `json:"one_process"`
	Two     RunResult  `json:"two_processes"`
	Speedup float64    `json:"speedup"`
	Rate    *RunResult `json:"rate_limit_check,omitempty"`
	RateRPS float64    `json:"rate_limit_rps,omitempty"`
}

// Report is the bench command's output.
type Report struct {
	Machine    Machine         `json:"machine"`
	Backfill   *BackfillReport `json:"backfill,omitempty"`
	Throughput *RunResult      `json:"throughput,omitempty"`
	// Ceiling is the split-and-encode path alone on the throughput run's responses.
	Ceiling   *CeilingResult   `json:"throughput_ceiling,omitempty"`
	Freshness *FreshnessReport `json:"freshness,omitempty"`
	Memory    *RunResult       `json:"memory,omitempty"`
	Scale     *ScaleReport     `json:"scale,omitempty"`
	Pacing    *PacingReport    `json:"pacing,omitempty"`
}

// runSpec is one fleet run's setup.
type runSpec struct {
	name          string
	slots         int
	eventsPerSlot float64
	eventSize     int
	latency       time.Duration
	concurrency   int
	workers       int
	rps           float64
	lookBack      time.Duration
	// minConcurrency is workers.min_concurrency (0: the default); equal to concurrency it fixes
	// the concurrency. concurrency 0 is the default bound, adaptive.
	minConcurrency int
	// latencyPerInFlight and rateLimitAbove make the fake appliance load-sensitive.
	latencyPerInFlight time.Duration
	rateLimitAbove     int
	// dataSlots, when more than slots, makes the appliance's data that many slots long, of which
	// the run backfills the first slots (the baseline's sample).
	dataSlots int
	live      bool
	// profileFakes measures the fakes' CPU with a CPU profile of the run (FakesCPU).
	profileFakes bool
}

// Run runs o's scenarios one after the other and reports what each measured; progress lines go
// to progress.
func Run(ctx context.Context, o Options, logger *slog.Logger, progress io.Writer) (*Report, error) {
	if o.CPUProfile != "" {
		f, err := os.Create(o.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("creating the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if o.Jitter < 0 {
		o.Jitter = -1 // resolved per run from its latency
	}
	rep := &Report{Machine: machine()}
	// Without --concurrency every scenario runs with the defaults (the adaptive pacing up to
	// workers.concurrency's default): the figures are what a user gets without tuning.
	r := &benchRunner{o: o, logger: logger, progress: progress, conc: max(o.Concurrency, 0)}
	for _, sc := range o.Scenarios {
		var err error
		switch sc {
		case "backfill":
			rep.Backfill, err = r.backfill(ctx)
		case "throughput":
			rep.Throughput, rep.Ceiling, err = r.throughput(ctx)
		case "memory":
			perSlot := float64(o.TPEventsPerSlot) * float64(max(o.EventSize, 1))
			slots := max(int(math.Ceil(float64(o.MemoryMB)*(1<<20)/perSlot)), 1)
			rep.Memory, err = r.run(ctx, r.tpSpec("memory", slots))
		case "freshness":
			rep.Freshness, err = r.freshness(ctx)
		case "scale":
			rep.Scale, err = r.scale(ctx)
		case "pacing":
			rep.Pacing, err = r.pacing(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", sc, err)
		}
	}
	return rep, nil
}

// benchRunner runs the scenarios of one bench.
type benchRunner struct {
	o        Options
	conc     int // --concurrency as given: 0 runs with the defaults (adaptive), N fixes N in flight
	logger   *slog.Logger
	progress io.Writer
}

func (r *benchRunner) tpSpec(name string, slots int) runSpec {
	return runSpec{name: name, slots: slots, eventsPerSlot: float64(r.o.TPEventsPerSlot), eventSize: r.o.EventSize,
		latency: r.o.TPLatency, concurrency: r.conc, minConcurrency: r.conc, workers: r.o.Workers, rps: r.o.RPS, lookBack: r.o.LookBack}
}

func (r *benchRunner) backfill(ctx context.Context) (*BackfillReport, error) {
	spec := runSpec{name: "backfill", slots: r.o.Slots, eventsPerSlot: float64(r.o.EventsPerSlot), latency: r.o.Latency,
		concurrency: r.conc, minConcurrency: r.conc, workers: r.o.Workers, rps: r.o.RPS, lookBack: r.o.LookBack}
	fleet, err := r.runPaced(ctx, spec)
	if err != nil {
		return nil, err
	}
	base := spec
	base.name, base.concurrency, base.minConcurrency, base.workers, base.dataSlots = "baseline", 1, 1, 1, spec.slots
	if r.o.BaselineSlots > 0 && r.o.BaselineSlots < spec.slots {
		base.slots = r.o.BaselineSlots
	}
	bl, err := r.run(ctx, base)
	if err != nil {
		return nil, err
	}
	rep := &BackfillReport{Fleet: *fleet, Baseline: *bl, BaselineWallSeconds: bl.WallSeconds, CeilingRPS: spec.rps}
	if base.slots < spec.slots {
		rep.BaselineExtrapolated = true
		rep.BaselineWallSeconds = bl.WallSeconds * float64(spec.slots) / float64(base.slots)
	}
	if fleet.WallSeconds > 0 {
		rep.Speedup = rep.BaselineWallSeconds / fleet.WallSeconds
	}
	return rep, nil
}

func (r *benchRunner) scale(ctx context.Context) (*ScaleReport, error) {
	spec := runSpec{name: "scale-1", slots: r.o.ScaleSlots, eventsPerSlot: float64(r.o.EventsPerSlot), latency: r.o.ScaleLatency,
		concurrency: r.o.ScaleConcurrency, workers: 1, rps: r.o.RPS, lookBack: r.o.LookBack}
	one, err := r.run(ctx, spec)
	if err != nil {
		return nil, err
	}
	spec.name, spec.workers = "scale-2", max(r.o.Workers, 2)
	two, err := r.run(ctx, spec)
	if err != nil {
		return nil, err
	}
	rep := &ScaleReport{One: *one, Two: *two}
	if two.WallSeconds > 0 {
		rep.Speedup = one.WallSeconds / two.WallSeconds
	}
	if r.o.RateCheckRPS > 0 {
		// Enough slots for several seconds at the limit, a latency far below the limit's
		// spacing, and more requests in flight than the limit allows.
		rc := runSpec{name: "rate-check", slots: max(int(r.o.RateCheckRPS*5), 10), eventsPerSlot: 1, latency: 5 * time.Millisecond,
			concurrency: 16, workers: max(r.o.Workers, 2), rps: r.o.RateCheckRPS, lookBack: r.o.LookBack}
		rate, err := r.run(ctx, rc)
		if err != nil {
			return nil, err
		}
		rep.Rate, rep.RateRPS = rate, r.o.RateCheckRPS
	}
	return rep, nil
}

func (r *benchRunner) freshness(ctx context.Context) (*FreshnessReport, error) {
	spec := runSpec{name: "freshness", eventsPerSlot: r.o.LiveEventsPerHour, eventSize: r.o.EventSize, latency: r.o.Latency,
		concurrency: r.conc, minConcurrency: r.conc, workers: r.o.Workers, rps: r.o.RPS, lookBack: time.Duration(config.DefaultLookBackInMinutes) * time.Minute, live: true}
	env, err := r.setup(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer env.close()
	res, err := env.measure(ctx, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.o.LiveDuration + r.o.Period + 2*time.Second): // the last period's events arrive
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	from, to := env.t0, env.t0.Add(r.o.LiveDuration)
	vis := env.fake.VisibleAt(config.ServiceModelBreaches, env.dataStart, env.dataEnd)
	env.mu.Lock()
	arrivals := env.arrivals
	env.mu.Unlock()
	var lat []float64
	want := 0
	for k, v := range vis {
		if v.Before(from) || !v.Before(to) {
			continue
		}
		want++
		if at, ok := arrivals[k]; ok {
			lat = append(lat, max(at.Sub(v), 0).Seconds())
		}
	}
	slices.Sort(lat)
	rep := &FreshnessReport{Run: *res, PeriodSeconds: r.o.Period.Seconds(), Measured: len(lat), Missing: want - len(lat)}
	if len(lat) > 0 {
		rep.P50Seconds, rep.P99Seconds, rep.MaxSeconds = quantile(lat, 0.5), quantile(lat, 0.99), lat[len(lat)-1]
	}
	return rep, nil
}

// quantile returns the q-quantile of sorted xs (nearest rank).
func quantile(xs []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// run sets up a backfill run, measures it until its last slot is delivered, and tears it down.
func (r *benchRunner) run(ctx context.Context, spec runSpec) (*RunResult, error) {
	env, err := r.setup(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer env.close()
	return env.measure(ctx, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-env.lastSlot:
			return nil
		}
	})
}

// benchEnv is one run's fake appliance, fake Devo, fleet and worker processes.
