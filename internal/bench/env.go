package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

type benchEnv struct {
	r         *benchRunner
	spec      runSpec
	dir       string
	fake      *darktracetest.Handler
	hs        *httptest.Server
	sink      *devotest.Server
	cfg       *config.Config
	file      fleet.File // the configuration, for the worker processes too
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

	mu       sync.Mutex
	arrivals map[string]time.Time // live runs: arrival of each key

	// pre is the throughput run's responses rendered before the run (prerender), nil otherwise.
	pre *prerendered

	running  *fleet.Running // the in-process fleet while measure runs
	lastSlot chan struct{}
	t0       time.Time
	cleanup  []func()
}

func (r *benchRunner) setup(ctx context.Context, spec runSpec) (_ *benchEnv, err error) {
	dir, err := os.MkdirTemp(r.o.Dir, "dtfleet-bench-"+spec.name+"-")
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
	w := r.o.Window
	now := time.Now().UTC()
	var cfgStart time.Time
	perHour := spec.eventsPerSlot * float64(time.Hour) / float64(w)
	if spec.live {
		perHour = spec.eventsPerSlot
		cfgStart = now.Truncate(time.Second)
		env.dataStart, env.dataEnd = now.Add(-3*time.Hour).Truncate(time.Hour), now.Add(r.o.LiveDuration+3*time.Hour).Truncate(time.Hour)
	} else {
		dataSlots := max(spec.dataSlots, spec.slots)
		env.dataEnd = now.Truncate(time.Hour).Add(-2 * time.Hour)
		env.dataStart = env.dataEnd.Add(-time.Duration(dataSlots) * w)
		cfgStart = env.dataStart
	}
	jitter := r.o.Jitter
	if jitter < 0 {
		jitter = spec.latency / 10
	}
	env.fake = darktracetest.NewHandler(darktracetest.Options{Seed: 1, Start: env.dataStart, End: env.dataEnd,
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: perHour}, EventSize: spec.eventSize,
		Latency: spec.latency, Jitter: jitter, LatencyPerInFlight: spec.latencyPerInFlight, RateLimitAbove: spec.rateLimitAbove})
	env.hs = httptest.NewServer(http.HandlerFunc(env.serveFake))
	env.cleanup = append(env.cleanup, func() { env.fake.Close(); env.hs.CloseClientConnections(); env.hs.Close() })
	if !spec.live {
		// Breaches are fetched by creation time: the slots deliver those created in their windows
		// (the first one reaching back by the look-back), whatever their time. The run ends when
		// its last slot is delivered, so the breaches created after that slot's window (up to an
		// hour after the data's end, the fake's tidy default) come in later slots and are not
		// this run's: counting them made every throughput run look a few hundred events short.
		from, to := env.dataStart.Add(-spec.lookBack), env.dataStart.Add(time.Duration(spec.slots)*w)
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
	sinkOpts := devotest.Options{TLSAddr: "127.0.0.1:0", CertFile: pki.ServerCert, KeyFile: pki.ServerKey,
		ClientCAFile: pki.CA, CountOnly: true, Logger: r.logger}
	if spec.live {
		// Only live runs need each event (its arrival time); the others read the fake's counts.
		sinkOpts.OnReceive = env.onReceive
	}
	// Started labelled, so that its accept loop and the connections' goroutines, which inherit
	// the labels, tell the fake Devo's work from the fleet's in a CPU profile
	// (go tool pprof -tagignore fake=devo).
	pprof.Do(ctx, pprof.Labels("fake", "devo"), func(context.Context) { env.sink, err = devotest.NewServer(sinkOpts) })
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
		period = max(int(r.o.Period/time.Second), 1)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("the fake Devo's port %q: %w", port, err)
	}
	env.file = fleet.File{
		Comment:     "Written by dtfleet bench (" + spec.name + ").",
		Globals:     fleet.FileGlobals{ID: "bench", Name: "dtfleet-bench"},
		NATS:        fleet.FileNATS{StoreDir: filepath.Join(dir, "data"), Listen: listen},
		Workers:     &fleet.FileWorkers{Concurrency: spec.concurrency, MinConcurrency: spec.minConcurrency},
		Coordinator: &fleet.FileCoordinator{SafetyLagInSeconds: fleet.Ptr(0), MaxBacklogInMB: r.o.BacklogMB},
		Outputs: map[string]fleet.FileOutput{"devo_1": {Type: config.OutputDevoPlatform,
			Config: fleet.FileOutputConfig{Address: host, Port: p, Chain: pki.CA, Cert: pki.ClientCert, Key: pki.ClientKey}}},
		Inputs: map[string]fleet.FileInput{"darktrace": {
			RequestsPerSecond: spec.rps,
			Credentials:       fleet.FileCredentials{PublicToken: darktracetest.DefaultPublicToken, PrivateToken: darktracetest.DefaultPrivateToken, Instance: env.hs.URL},
			Services: map[string]fleet.FileService{config.ServiceModelBreaches: {StartTime: cfgStart.Format(time.RFC3339),
				LookBackInMinutes: fleet.Ptr(int(spec.lookBack / time.Minute)), WindowInMinutes: int(w / time.Minute), RequestPeriodInSeconds: period}},
		}},
	}
	if env.cfg, err = env.file.Load(filepath.Join(dir, "config.yaml")); err != nil {
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
	// Labelled, so that a CPU profile tells the fake appliance's rendering from the fleet's work
	// (go tool pprof -tagignore fake=appliance).
	pprof.Do(req.Context(), pprof.Labels("fake", "appliance"), func(context.Context) {
		// A data request of a pre-rendered run is answered from the file when it is one of the
		// run's slot requests; any other goes to the live fake, which is always right. (Data
		// requests read e.pre after the gate, which opens after prerender set it.)
		if req.URL.Path == e.endpoint && !isTokenCheck(req) && e.pre != nil && e.pre.serve && e.pre.serveHTTP(w, req) {
			return
		}
		e.fake.ServeHTTP(w, req)
	})
}

// onReceive records when each event of a live run arrived.
func (e *benchEnv) onReceive(ev devotest.Received) {
	now := time.Now()
	k := darktracetest.Key(config.ServiceModelBreaches, []byte(ev.Msg))
	e.mu.Lock()
	if _, ok := e.arrivals[k]; !ok {
		e.arrivals[k] = now
	}
	e.mu.Unlock()
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
	ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	var lastOnce sync.Once
	target := uint64(spec.slots)
	f, err := fleet.Start(ctx, fleet.Fleet{Config: e.cfg, Roles: fleet.AllRoles, Deps: fleet.Dependencies{Logger: r.logger},
		Overrides: fleet.Overrides{Tick: 100 * time.Millisecond, ID: "bench"},
		Hooks: fleet.Hooks{OnDelivered: func(d proto.Done, _ int) {
			if !spec.live && d.Seq >= target {
				lastOnce.Do(func() { close(e.lastSlot) })
			}
		}}})
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Stop() }()
	e.running = f
	children, err := e.startWorkers(f.Bus.ClientURL)
	defer stopWorkers(children)
	if err != nil {
		return nil, err
	}
	wctx, cancelWait := context.WithTimeout(ctx, 60*time.Second)
	err = f.WaitFor(wctx, func(st *status.Status) bool { return len(st.Workers) >= spec.workers })
	cancelWait()
	if err != nil {
		return nil, fmt.Errorf("waiting for %d worker processes: %w", spec.workers, err)
	}

	fmt.Fprintf(r.progress, "bench: %s: %d slots, %d worker process(es) × %d in flight, latency %v ...\n",
		spec.name, spec.slots, spec.workers, spec.concurrency, spec.latency)
	// Start from a collected heap, so that the peaks are this run's, not an earlier one's garbage.
	debug.FreeOSMemory()
	mem := startMemSampler(r.o.MemProfile, spec.name)
	rssReset := resetPeakRSS()
	cpu0 := cpuTime(syscall.RUSAGE_SELF)
	child0 := cpuTime(syscall.RUSAGE_CHILDREN)
	var prof *runProfile
	if spec.profileFakes {
		prof = startRunProfile()
	}
	e.t0 = time.Now()
	close(e.gate)
	err = until(ctx)
	wall := time.Since(e.t0)
	var fakeAppliance, fakeDevo time.Duration
	if prof != nil {
		var perr error
		if fakeAppliance, fakeDevo, perr = prof.stop(); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s did not finish (%d of %d events delivered): %w", spec.name, e.sink.Count(), e.expected, err)
	}
	cpuSelf := cpuTime(syscall.RUSAGE_SELF) - cpu0
	peakHeap := mem.stop()
	peakRSS := peakRSSBytes()
	if err := f.Stop(); err != nil && !errors.Is(err, context.Canceled) {
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
		WallSeconds: wall.Seconds(), Events: int64(e.sink.Count()), Expected: e.expected, EventBytes: e.sink.Bytes(),
		Requests: int64(len(reqs)), MaxRequestsPerSecond: maxPerSecond(sent),
		CPUSeconds: (cpuSelf + cpuChildren).Seconds(),
		PeakRSSMB:  float64(peakRSS) / (1 << 20), PeakHeapMB: float64(peakHeap) / (1 << 20), RSSPeakReset: rssReset,
	}
	if spec.live {
		res.Expected = 0
	}
	if e.pre != nil && e.pre.serve {
		res.PreRendered = e.pre.result()
	}
	if s := wall.Seconds(); s > 0 {
		res.EventsPerSecond = float64(res.Events) / s
		res.MBPerSecond = float64(res.EventBytes) / (1 << 20) / s
	}
	if res.Events > 0 {
		res.CPUPerMillionEvent = res.CPUSeconds / float64(res.Events) * 1e6
		if prof != nil {
			res.FakesCPU = &FakesCPU{ApplianceSeconds: fakeAppliance.Seconds(), DevoSeconds: fakeDevo.Seconds(),
				FleetCPUPerMillionEvent: (res.CPUSeconds - (fakeAppliance + fakeDevo).Seconds()) / float64(res.Events) * 1e6}
		}
	}
	return res, nil
}

// startWorkers starts spec.workers-1 `dtfleet worker` processes of this binary against url.
func (e *benchEnv) startWorkers(url string) ([]*exec.Cmd, error) {
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
	// The same configuration, joined to the embedded server through its listener.
	wf := e.file
	wf.NATS = fleet.FileNATS{URL: url}
	wcfg := filepath.Join(e.dir, "worker.yaml")
	if _, err := wf.Load(wcfg); err != nil {
		return nil, fmt.Errorf("the worker processes' configuration: %w", err)
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

// isTokenCheck reports whether req is a worker's start-up token check, a window of one minute at
// most (darktrace.CheckRequest): it passes the gate, which holds the slots' requests only.
func isTokenCheck(req *http.Request) bool {
	q := req.URL.Query()
	start, err1 := strconv.ParseInt(q.Get("starttime"), 10, 64)
	end, err2 := strconv.ParseInt(q.Get("endtime"), 10, 64)
	return err1 == nil && err2 == nil && end-start <= time.Minute.Milliseconds()
}
