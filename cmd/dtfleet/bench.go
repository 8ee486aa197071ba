package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// benchScenarios are the scenarios dtfleet bench knows, in the order it runs them.
var benchScenarios = []string{"backfill", "throughput", "freshness", "memory", "scale"}

// benchOptions are the bench command's flags.
type benchOptions struct {
	scenarios []string
	dir       string
	json      bool
	cpuprof   string
	memprof   string
	timeout   time.Duration

	// backfill
	slots         int
	eventsPerSlot int
	latency       time.Duration
	jitter        time.Duration
	concurrency   int
	baselineSlots int
	workers       int
	rps           float64
	window        time.Duration
	lookBack      time.Duration
	backlogMB     int // coordinator.max_backlog_in_mb of every run

	// throughput and memory
	eventSize       int
	tpSlots         int
	tpEventsPerSlot int
	tpLatency       time.Duration
	memoryMB        int

	// freshness
	liveDuration      time.Duration
	period            time.Duration
	liveEventsPerHour float64

	// scale
	scaleSlots       int
	scaleLatency     time.Duration
	scaleConcurrency int
	rateCheckRPS     float64
}

func newBenchCmd(g *globalFlags) *cobra.Command {
	o := benchOptions{}
	var scenarios string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the fleet in-process against the fake appliance and the fake Devo over TLS",
		Long: `bench runs the whole fleet in this process — embedded NATS with file storage in a temporary
directory and the real sync policy (fsync before every acknowledgement) — against the fake Darktrace
appliance and the fake Devo receiver over mutual TLS, and reports what it measured:

  backfill    wall time of --slots slots at --latency with --concurrency requests in flight, next
              to the sequential baseline (one request at a time, as Devo's collector works) on the
              first --baseline-slots of the same slots; the baseline's time is extrapolated to all
              slots when it ran on fewer, and the output says so.
  throughput  events/s and MB/s of event JSON from the first appliance request to the last line
              received by the fake Devo, and CPU seconds per million events (getrusage of this
              process, which also runs the fake appliance and the fake Devo, plus its workers).
  freshness   p50/p99 from an event becoming visible in the live fake appliance to its line
              arriving at the fake Devo, with a request period of --period.
  memory      peak RSS (VmHWM, reset per run) and peak heap (runtime/metrics) of a --memory-mb
              backfill.
  scale       a latency-bound backfill with one worker process, then two (the second a
              'dtfleet worker' OS process of this binary), and a check that requests_per_second
              holds fleet-wide with two processes.

Every figure is measured; none is computed from the knobs. Timings vary with the machine's load.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Root().PersistentFlags().Changed("log-level") {
				g.logLevel = "error"
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			for _, s := range strings.Split(scenarios, ",") {
				s = strings.TrimSpace(s)
				if s == "all" {
					o.scenarios = benchScenarios
					break
				}
				if !slices.Contains(benchScenarios, s) {
					return fmt.Errorf("--scenarios: unknown scenario %q (known: %s, all)", s, strings.Join(benchScenarios, ", "))
				}
				o.scenarios = append(o.scenarios, s)
			}
			rep, err := runBench(cmd.Context(), o, logger, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if o.json {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			rep.table(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&scenarios, "scenarios", "backfill,throughput,freshness,memory,scale", "comma-separated scenarios to run: "+strings.Join(benchScenarios, ", ")+", or all")
	f.StringVar(&o.dir, "dir", "", "parent of the temporary directories (NATS stores, certificates); default the system's")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	f.StringVar(&o.cpuprof, "cpuprofile", "", "write a CPU profile of the whole bench to this file")
	f.StringVar(&o.memprof, "memprofile", "", "write a heap profile to this file at each run's peak heap (the run's name is appended)")
	f.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up a run that has not finished by then")

	f.IntVar(&o.slots, "slots", 500, "backfill: slots (time windows) to backfill")
	f.IntVar(&o.eventsPerSlot, "events-per-slot", 5, "backfill: mean events per slot")
	f.DurationVar(&o.latency, "latency", 20*time.Millisecond, "backfill: appliance response latency")
	f.DurationVar(&o.jitter, "jitter", -1, "appliance latency jitter (uniform ±); default a tenth of the latency")
	f.IntVar(&o.concurrency, "concurrency", 32, "backfill, throughput, memory, freshness: requests in flight per worker process")
	f.IntVar(&o.baselineSlots, "baseline-slots", 100, "backfill: slots the sequential baseline runs on (0: all; fewer are extrapolated)")
	f.IntVar(&o.workers, "workers", 1, "worker processes (N-1 extra 'dtfleet worker' processes of this binary) for backfill, throughput, memory, freshness")
	f.Float64Var(&o.rps, "rps", 2000, "requests_per_second of the input (fleet-wide limit)")
	f.DurationVar(&o.window, "window", time.Hour, "slot window (override_time_window_interval_in_minutes)")
	f.DurationVar(&o.lookBack, "look-back", 0, "modelbreaches look-back of backfill runs (freshness always uses the default 60m)")

	f.IntVar(&o.eventSize, "event-size", 2048, "throughput, memory: approximate bytes per event")
	f.IntVar(&o.tpSlots, "throughput-slots", 40, "throughput: slots")
	f.IntVar(&o.tpEventsPerSlot, "throughput-events-per-slot", 5000, "throughput, memory: mean events per slot")
	f.DurationVar(&o.tpLatency, "throughput-latency", 0, "throughput, memory: appliance latency")
	f.IntVar(&o.memoryMB, "memory-mb", 512, "memory: MB of event JSON to backfill")
	f.IntVar(&o.backlogMB, "max-backlog-mb", config.DefaultMaxBacklogInMB, "every run: coordinator.max_backlog_in_mb (results planned but not delivered, per lane)")

	f.DurationVar(&o.liveDuration, "live-duration", 30*time.Second, "freshness: how long events are measured")
	f.DurationVar(&o.period, "period", 5*time.Second, "freshness: request_period_in_seconds")
	f.Float64Var(&o.liveEventsPerHour, "live-events-per-hour", 3600, "freshness: events per hour the live appliance produces")

	f.IntVar(&o.scaleSlots, "scale-slots", 1000, "scale: slots of each run")
	f.DurationVar(&o.scaleLatency, "scale-latency", 100*time.Millisecond, "scale: appliance latency")
	f.IntVar(&o.scaleConcurrency, "scale-concurrency", 8, "scale: requests in flight per worker process")
	f.Float64Var(&o.rateCheckRPS, "rate-check-rps", 20, "scale: requests_per_second of the fleet-wide limit check (0 skips it)")
	return cmd
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
	Events      int64   `json:"events"`
	Expected    int64   `json:"expected_events"`
	EventBytes  int64   `json:"event_bytes"`
	Requests    int64   `json:"requests"`
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

// BenchReport is the bench command's output.
type BenchReport struct {
	Machine    Machine          `json:"machine"`
	Backfill   *BackfillReport  `json:"backfill,omitempty"`
	Throughput *RunResult       `json:"throughput,omitempty"`
	Freshness  *FreshnessReport `json:"freshness,omitempty"`
	Memory     *RunResult       `json:"memory,omitempty"`
	Scale      *ScaleReport     `json:"scale,omitempty"`
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
	// dataSlots, when more than slots, makes the appliance's data that many slots long, of which
	// the run backfills the first slots (the baseline's sample).
	dataSlots int
	live      bool
}

func runBench(ctx context.Context, o benchOptions, logger *slog.Logger, progress io.Writer) (*BenchReport, error) {
	if o.cpuprof != "" {
		f, err := os.Create(o.cpuprof)
		if err != nil {
			return nil, fmt.Errorf("creating the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("starting the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if o.jitter < 0 {
		o.jitter = -1 // resolved per run from its latency
	}
	rep := &BenchReport{Machine: machine()}
	r := &benchRunner{o: o, logger: logger, progress: progress}
	for _, sc := range o.scenarios {
		var err error
		switch sc {
		case "backfill":
			rep.Backfill, err = r.backfill(ctx)
		case "throughput":
			spec := r.tpSpec("throughput", o.tpSlots)
			rep.Throughput, err = r.run(ctx, spec)
		case "memory":
			perSlot := float64(o.tpEventsPerSlot) * float64(max(o.eventSize, 1))
			slots := max(int(math.Ceil(float64(o.memoryMB)*(1<<20)/perSlot)), 1)
			rep.Memory, err = r.run(ctx, r.tpSpec("memory", slots))
		case "freshness":
			rep.Freshness, err = r.freshness(ctx)
		case "scale":
			rep.Scale, err = r.scale(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", sc, err)
		}
	}
	return rep, nil
}

// benchRunner runs the scenarios of one bench.
type benchRunner struct {
	o        benchOptions
	logger   *slog.Logger
	progress io.Writer
}

func (r *benchRunner) tpSpec(name string, slots int) runSpec {
	return runSpec{name: name, slots: slots, eventsPerSlot: float64(r.o.tpEventsPerSlot), eventSize: r.o.eventSize,
		latency: r.o.tpLatency, concurrency: r.o.concurrency, workers: r.o.workers, rps: r.o.rps, lookBack: r.o.lookBack}
}

func (r *benchRunner) backfill(ctx context.Context) (*BackfillReport, error) {
	spec := runSpec{name: "backfill", slots: r.o.slots, eventsPerSlot: float64(r.o.eventsPerSlot), latency: r.o.latency,
		concurrency: r.o.concurrency, workers: r.o.workers, rps: r.o.rps, lookBack: r.o.lookBack}
	fleet, err := r.run(ctx, spec)
	if err != nil {
		return nil, err
	}
	base := spec
	base.name, base.concurrency, base.workers, base.dataSlots = "baseline", 1, 1, spec.slots
	if r.o.baselineSlots > 0 && r.o.baselineSlots < spec.slots {
		base.slots = r.o.baselineSlots
	}
	bl, err := r.run(ctx, base)
	if err != nil {
		return nil, err
	}
	rep := &BackfillReport{Fleet: *fleet, Baseline: *bl, BaselineWallSeconds: bl.WallSeconds}
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
	spec := runSpec{name: "scale-1", slots: r.o.scaleSlots, eventsPerSlot: float64(r.o.eventsPerSlot), latency: r.o.scaleLatency,
		concurrency: r.o.scaleConcurrency, workers: 1, rps: r.o.rps, lookBack: r.o.lookBack}
	one, err := r.run(ctx, spec)
	if err != nil {
		return nil, err
	}
	spec.name, spec.workers = "scale-2", max(r.o.workers, 2)
	two, err := r.run(ctx, spec)
	if err != nil {
		return nil, err
	}
	rep := &ScaleReport{One: *one, Two: *two}
	if two.WallSeconds > 0 {
		rep.Speedup = one.WallSeconds / two.WallSeconds
	}
	if r.o.rateCheckRPS > 0 {
		// Enough slots for several seconds at the limit, a latency far below the limit's
		// spacing, and more requests in flight than the limit allows.
		rc := runSpec{name: "rate-check", slots: max(int(r.o.rateCheckRPS*5), 10), eventsPerSlot: 1, latency: 5 * time.Millisecond,
			concurrency: 16, workers: max(r.o.workers, 2), rps: r.o.rateCheckRPS, lookBack: r.o.lookBack}
		rate, err := r.run(ctx, rc)
		if err != nil {
			return nil, err
		}
		rep.Rate, rep.RateRPS = rate, r.o.rateCheckRPS
	}
	return rep, nil
}

func (r *benchRunner) freshness(ctx context.Context) (*FreshnessReport, error) {
	spec := runSpec{name: "freshness", eventsPerSlot: r.o.liveEventsPerHour, eventSize: r.o.eventSize, latency: r.o.latency,
		concurrency: r.o.concurrency, workers: r.o.workers, rps: r.o.rps, lookBack: time.Duration(config.DefaultLookBackInMinutes) * time.Minute, live: true}
	env, err := r.setup(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer env.close()
	res, err := env.measure(ctx, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(r.o.liveDuration + r.o.period + 2*time.Second): // the last period's events arrive
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	from, to := env.t0, env.t0.Add(r.o.liveDuration)
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
	rep := &FreshnessReport{Run: *res, PeriodSeconds: r.o.period.Seconds(), Measured: len(lat), Missing: want - len(lat)}
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
type benchEnv struct {
	r         *benchRunner
	spec      runSpec
	dir       string
	fake      *darktracetest.Handler
	hs        *httptest.Server
	sink      *devotest.Server
	cfg       *config.Config
	cfgPath   string
	dataStart time.Time
	dataEnd   time.Time
	expected  int64
	endpoint  string

	gate     chan struct{}
	gateOnce sync.Once
	reqMu    sync.Mutex
	reqTimes []time.Time // when each data request was served (after the gate)
	// sentTimes is when each data request reached the appliance, before the gate: the spacing
	// the fleet's rate limiter gave them. Requests held at the gate are served together when it
	// opens, which says nothing about the limiter.
	sentTimes []time.Time

	events     atomic.Int64
	eventBytes atomic.Int64
	mu         sync.Mutex
	arrivals   map[string]time.Time // live runs: arrival of each key

	lastSlot chan struct{}
	t0       time.Time
	cleanup  []func()
}

func (r *benchRunner) setup(ctx context.Context, spec runSpec) (_ *benchEnv, err error) {
	dir, err := os.MkdirTemp(r.o.dir, "dtfleet-bench-"+spec.name+"-")
	if err != nil {
		return nil, fmt.Errorf("creating the bench directory: %w", err)
	}
	env := &benchEnv{r: r, spec: spec, dir: dir, gate: make(chan struct{}), lastSlot: make(chan struct{}),
		arrivals: map[string]time.Time{}, endpoint: "/modelbreaches"}
	env.cleanup = append(env.cleanup, func() { _ = os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			env.close()
		}
	}()
	w := r.o.window
	now := time.Now().UTC()
	var cfgStart time.Time
	perHour := spec.eventsPerSlot * float64(time.Hour) / float64(w)
	if spec.live {
		perHour = spec.eventsPerSlot
		cfgStart = now.Truncate(time.Second)
		env.dataStart, env.dataEnd = now.Add(-3*time.Hour).Truncate(time.Hour), now.Add(r.o.liveDuration+3*time.Hour).Truncate(time.Hour)
	} else {
		dataSlots := max(spec.dataSlots, spec.slots)
		env.dataEnd = now.Truncate(time.Hour).Add(-2 * time.Hour)
		env.dataStart = env.dataEnd.Add(-time.Duration(dataSlots) * w)
		cfgStart = env.dataStart
	}
	jitter := r.o.jitter
	if jitter < 0 {
		jitter = spec.latency / 10
	}
	env.fake = darktracetest.NewHandler(darktracetest.Options{Seed: 1, Start: env.dataStart, End: env.dataEnd,
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: perHour}, EventSize: spec.eventSize,
		Latency: spec.latency, Jitter: jitter})
	env.hs = httptest.NewServer(http.HandlerFunc(env.serveFake))
	env.cleanup = append(env.cleanup, func() { env.fake.Close(); env.hs.CloseClientConnections(); env.hs.Close() })
	if !spec.live {
		// Breaches are fetched by creation time: the slots deliver those created in their windows
		// (the first one reaching back by the look-back), whatever their time.
		// When the slots cover all the data, the breaches created after its end (at most an hour,
		// the fake's tidy default) come in the slots after it, which the coordinator plans too.
		from, to := env.dataStart.Add(-spec.lookBack), env.dataStart.Add(time.Duration(spec.slots)*w)
		if !to.Before(env.dataEnd) {
			to = to.Add(time.Hour)
		}
		for _, at := range env.fake.VisibleAt(config.ServiceModelBreaches, from.Add(-24*time.Hour), to) {
			if !at.Before(from) && !at.After(to) {
				env.expected++
			}
		}
	}

	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o750); err != nil {
		return nil, err
	}
	pki, err := devotest.NewPKI(filepath.Join(dir, "certs"))
	if err != nil {
		return nil, fmt.Errorf("making the bench's certificates: %w", err)
	}
	env.sink, err = devotest.NewServer(devotest.Options{TLSAddr: "127.0.0.1:0", CertFile: pki.ServerCert, KeyFile: pki.ServerKey,
		ClientCAFile: pki.CA, CountOnly: true, OnReceive: env.onReceive, Logger: r.logger})
	if err != nil {
		return nil, err
	}
	env.cleanup = append(env.cleanup, func() { _ = env.sink.Close() })
	host, port, _ := strings.Cut(env.sink.TLSAddr(), ":")
	listen := "none"
	if spec.workers > 1 {
		listen = "127.0.0.1:0"
	}
	period := 3600 // backfills plan full windows only
	if spec.live {
		period = max(int(r.o.period/time.Second), 1)
	}
	y := fmt.Sprintf(`# Written by dtfleet bench (%s).
globals: {id: bench, name: dtfleet-bench}
nats: {store_dir: %s, listen: %q}
workers: {concurrency: %d}
coordinator: {safety_lag_in_seconds: 0, max_backlog_in_mb: %d}
outputs:
  devo_1: {type: devo_platform, config: {address: %s, port: %s, chain: %s, cert: %s, key: %s}}
inputs:
  darktrace:
    requests_per_second: %g
    credentials: {public_token: %s, private_token: %s, instance: %s}
    services:
      modelbreaches: {start_time_in_utc_format: %q, look_back_in_minutes: %d, override_time_window_interval_in_minutes: %d, request_period_in_seconds: %d}
`, spec.name, filepath.Join(dir, "data"), listen, spec.concurrency, r.o.backlogMB, host, port, pki.CA, pki.ClientCert, pki.ClientKey,
		spec.rps, darktracetest.DefaultPublicToken, darktracetest.DefaultPrivateToken, env.hs.URL,
		cfgStart.Format(time.RFC3339), int(spec.lookBack/time.Minute), int(w/time.Minute), period)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		return nil, err
	}
	env.cfgPath = cfgPath
	if env.cfg, err = config.Load(cfgPath, config.LoadOptions{}); err != nil {
		return nil, err
	}
	return env, nil
}

// serveFake serves the fake appliance, holding data requests until the gate opens and
// recording when each arrived.
func (e *benchEnv) serveFake(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == e.endpoint && !isTokenCheck(req) {
		e.reqMu.Lock()
		e.sentTimes = append(e.sentTimes, time.Now())
		e.reqMu.Unlock()
		select {
		case <-e.gate:
		case <-req.Context().Done():
			return
		}
		e.reqMu.Lock()
		e.reqTimes = append(e.reqTimes, time.Now())
		e.reqMu.Unlock()
	}
	e.fake.ServeHTTP(w, req)
}

// isTokenCheck reports whether req is a worker's start-up token check, a window of one minute at
// most (darktrace.CheckRequest): it passes the gate, which holds the slots' requests only.
func isTokenCheck(req *http.Request) bool {
	q := req.URL.Query()
	start, err1 := strconv.ParseInt(q.Get("starttime"), 10, 64)
	end, err2 := strconv.ParseInt(q.Get("endtime"), 10, 64)
	return err1 == nil && err2 == nil && end-start <= time.Minute.Milliseconds()
}

func (e *benchEnv) onReceive(ev devotest.Received) {
	e.events.Add(1)
	e.eventBytes.Add(int64(len(ev.Msg)))
	if e.spec.live {
		now := time.Now()
		k := darktracetest.Key(config.ServiceModelBreaches, []byte(ev.Msg))
		e.mu.Lock()
		if _, ok := e.arrivals[k]; !ok {
			e.arrivals[k] = now
		}
		e.mu.Unlock()
	}
}

func (e *benchEnv) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
	e.cleanup = nil
}

// measure starts the fleet (and the extra worker processes), opens the gate once every worker
// process is up, waits for until, and stops everything. The figures cover gate to until.
func (e *benchEnv) measure(ctx context.Context, until func(context.Context) error) (*RunResult, error) {
	r, spec := e.r, e.spec
	ctx, cancel := context.WithTimeout(ctx, r.o.timeout)
	defer cancel()
	fctx, stopFleet := context.WithCancel(ctx)
	defer stopFleet()
	busc := make(chan *bus.Bus, 1)
	errc := make(chan error, 1)
	var lastOnce sync.Once
	target := uint64(spec.slots)
	go func() {
		errc <- runFleet(fctx, e.cfg, allRoles, fleetOptions{listen: "", tick: 100 * time.Millisecond, id: "bench",
			onBus: func(b *bus.Bus) { busc <- b },
			onDelivered: func(d proto.Done, _ int) {
				if !spec.live && d.Seq >= target {
					lastOnce.Do(func() { close(e.lastSlot) })
				}
			}}, r.logger)
	}()
	var b *bus.Bus
	select {
	case b = <-busc:
	case err := <-errc:
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	fleetDone := false
	defer func() {
		if !fleetDone {
			stopFleet()
			<-errc
		}
	}()
	children, err := e.startWorkers(ctx, b.ClientURL)
	defer stopWorkers(children)
	if err != nil {
		return nil, err
	}
	if err := waitWorkers(ctx, b, spec.workers, errc); err != nil {
		return nil, err
	}

	fmt.Fprintf(r.progress, "bench: %s: %d slots, %d worker process(es) × %d in flight, latency %v ...\n",
		spec.name, spec.slots, spec.workers, spec.concurrency, spec.latency)
	// Start from a collected heap, so that the peaks are this run's, not an earlier one's garbage.
	debug.FreeOSMemory()
	mem := startMemSampler(r.o.memprof, spec.name)
	rssReset := resetPeakRSS()
	cpu0 := cpuTime(syscall.RUSAGE_SELF)
	child0 := cpuTime(syscall.RUSAGE_CHILDREN)
	e.t0 = time.Now()
	close(e.gate)
	err = until(ctx)
	wall := time.Since(e.t0)
	if err != nil {
		return nil, fmt.Errorf("%s did not finish (%d of %d events delivered): %w", spec.name, e.events.Load(), e.expected, err)
	}
	cpuSelf := cpuTime(syscall.RUSAGE_SELF) - cpu0
	peakHeap := mem.stop()
	peakRSS := peakRSSBytes()
	stopFleet()
	fleetDone = true
	if err := <-errc; err != nil && !errors.Is(err, context.Canceled) {
		return nil, fmt.Errorf("the fleet stopped with an error: %w", err)
	}
	stopWorkers(children)
	children = nil
	cpuChildren := cpuTime(syscall.RUSAGE_CHILDREN) - child0

	e.reqMu.Lock()
	reqs, sent := slices.Clone(e.reqTimes), slices.Clone(e.sentTimes)
	e.reqMu.Unlock()
	res := &RunResult{
		Name: spec.name, Slots: spec.slots, Workers: spec.workers, Concurrency: spec.concurrency,
		LatencyMS:   float64(spec.latency) / float64(time.Millisecond),
		WallSeconds: wall.Seconds(), Events: e.events.Load(), Expected: e.expected, EventBytes: e.eventBytes.Load(),
		Requests: int64(len(reqs)), MaxRequestsPerSecond: maxPerSecond(sent),
		CPUSeconds: (cpuSelf + cpuChildren).Seconds(),
		PeakRSSMB:  float64(peakRSS) / (1 << 20), PeakHeapMB: float64(peakHeap) / (1 << 20), RSSPeakReset: rssReset,
	}
	if spec.live {
		res.Expected = 0
	}
	if s := wall.Seconds(); s > 0 {
		res.EventsPerSecond = float64(res.Events) / s
		res.MBPerSecond = float64(res.EventBytes) / (1 << 20) / s
	}
	if res.Events > 0 {
		res.CPUPerMillionEvent = res.CPUSeconds / float64(res.Events) * 1e6
	}
	return res, nil
}

// startWorkers starts spec.workers-1 `dtfleet worker` processes of this binary against url.
func (e *benchEnv) startWorkers(ctx context.Context, url string) ([]*exec.Cmd, error) {
	n := e.spec.workers - 1
	if n <= 0 {
		return nil, nil
	}
	if url == "" {
		return nil, errors.New("the embedded NATS server has no listener for worker processes")
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this binary to start worker processes: %w", err)
	}
	raw, err := os.ReadFile(e.cfgPath)
	if err != nil {
		return nil, err
	}
	// The same configuration, joined to the embedded server through its listener.
	var lines []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "nats:") {
			l = fmt.Sprintf("nats: {url: %q}", url)
		}
		lines = append(lines, l)
	}
	wcfg := filepath.Join(e.dir, "worker.yaml")
	if err := os.WriteFile(wcfg, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	for i := range n {
		c := exec.Command(exe, "worker", "-c", wcfg, "--log-level", "error")
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		c.Env = append(os.Environ(), "DTFLEET_BENCH_WORKER="+strconv.Itoa(i+1))
		if err := c.Start(); err != nil {
			return cmds, fmt.Errorf("starting worker process %d: %w", i+1, err)
		}
		cmds = append(cmds, c)
	}
	_ = ctx
	return cmds, nil
}

// stopWorkers asks worker processes to stop and waits for them (killing them after 15 s).
func stopWorkers(cmds []*exec.Cmd) {
	for _, c := range cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range cmds {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = c.Process.Kill()
			<-done
		}
	}
}

// waitWorkers waits until n workers have written their heartbeat.
func waitWorkers(ctx context.Context, b *bus.Bus, n int, errc chan error) error {
	kv, err := b.KV(ctx, proto.BucketWorkers)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		keys := 0
		if lister, err := kv.ListKeys(ctx); err == nil {
			for range lister.Keys() {
				keys++
			}
		}
		if keys >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d worker processes up after 60s", keys, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			errc <- err
			return fmt.Errorf("the fleet stopped early: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// maxPerSecond returns the most instants of ts (in arrival order) inside any one-second window.
func maxPerSecond(ts []time.Time) int {
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= time.Second {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// cpuTime returns user+system CPU time of who (RUSAGE_SELF or RUSAGE_CHILDREN).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS resets the kernel's peak RSS of this process (VmHWM); it reports whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSSBytes returns VmHWM from /proc/self/status, or getrusage's maxrss.
func peakRSSBytes() int64 {
	if f, err := os.Open("/proc/self/status"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss << 10
}

// memSampler samples the live heap every 10 ms and keeps the peak. With a profile path, it
// writes a heap profile whenever the peak grows by a tenth.
type memSampler struct {
	stopc chan struct{}
	done  chan struct{}
	peak  uint64
}

func startMemSampler(profile, name string) *memSampler {
	m := &memSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var profiled uint64
		for {
			metrics.Read(s)
			if s[0].Value.Kind() == metrics.KindUint64 {
				m.peak = max(m.peak, s[0].Value.Uint64())
			}
			if profile != "" && m.peak > profiled+profiled/10+1<<20 {
				profiled = m.peak
				_ = writeHeapProfile(profile + "." + name)
			}
			select {
			case <-m.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memSampler) stop() uint64 {
	close(m.stopc)
	<-m.done
	return m.peak
}

// writeHeapProfile writes the heap profile to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating the heap profile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		return fmt.Errorf("writing the heap profile: %w", err)
	}
	return nil
}

// machine describes this host.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}

// table prints the report for people.
func (rep *BenchReport) table(w io.Writer) {
	fmt.Fprintf(w, "machine: %d CPUs, %s, %s, %s\n\n", rep.Machine.CPUs, rep.Machine.CPUModel, rep.Machine.GoVersion, rep.Machine.OS)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tSLOTS\tPROCS×INFLIGHT\tLATENCY\tWALL\tEVENTS\tEVENTS/S\tMB/S\tCPU-S/M-EV\tREQ\tMAX REQ/S\tPEAK RSS MB\tPEAK HEAP MB")
	row := func(r *RunResult) {
		ev := strconv.FormatInt(r.Events, 10)
		if r.Expected > 0 && r.Expected != r.Events {
			ev += fmt.Sprintf(" (expected %d)", r.Expected)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d×%d\t%gms\t%.2fs\t%s\t%.0f\t%.1f\t%.1f\t%d\t%d\t%.0f\t%.0f\n", r.Name, r.Slots, r.Workers, r.Concurrency,
			r.LatencyMS, r.WallSeconds, ev, r.EventsPerSecond, r.MBPerSecond, r.CPUPerMillionEvent, r.Requests, r.MaxRequestsPerSecond, r.PeakRSSMB, r.PeakHeapMB)
	}
	var notes []string
	if b := rep.Backfill; b != nil {
		row(&b.Fleet)
		row(&b.Baseline)
		ex := "measured"
		if b.BaselineExtrapolated {
			ex = fmt.Sprintf("EXTRAPOLATED from %d of %d slots", b.Baseline.Slots, b.Fleet.Slots)
		}
		notes = append(notes, fmt.Sprintf("backfill: %d slots in %.2fs with %d in flight vs sequential baseline %.2fs (%s): %.1f× faster",
			b.Fleet.Slots, b.Fleet.WallSeconds, b.Fleet.Concurrency*b.Fleet.Workers, b.BaselineWallSeconds, ex, b.Speedup))
	}
	if t := rep.Throughput; t != nil {
		row(t)
		notes = append(notes, fmt.Sprintf("throughput: %.0f events/s, %.1f MB/s of event JSON, %.1f CPU-s per million events", t.EventsPerSecond, t.MBPerSecond, t.CPUPerMillionEvent))
	}
	if f := rep.Freshness; f != nil {
		row(&f.Run)
		notes = append(notes, fmt.Sprintf("freshness: p50 %.2fs, p99 %.2fs, max %.2fs over %d events (request period %gs, %d missing)",
			f.P50Seconds, f.P99Seconds, f.MaxSeconds, f.Measured, f.PeriodSeconds, f.Missing))
	}
	if m := rep.Memory; m != nil {
		row(m)
		notes = append(notes, fmt.Sprintf("memory: %.0f MB of event JSON, peak RSS %.0f MB, peak heap %.0f MB", float64(m.EventBytes)/(1<<20), m.PeakRSSMB, m.PeakHeapMB))
	}
	if s := rep.Scale; s != nil {
		row(&s.One)
		row(&s.Two)
		notes = append(notes, fmt.Sprintf("scale: %d worker processes %.2f× one (%.2fs vs %.2fs)", s.Two.Workers, s.Speedup, s.Two.WallSeconds, s.One.WallSeconds))
		if s.Rate != nil {
			row(s.Rate)
			notes = append(notes, fmt.Sprintf("rate limit: %g requests/s configured, at most %d in any second across %d processes", s.RateRPS, s.Rate.MaxRequestsPerSecond, s.Rate.Workers))
		}
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}
