package coordinator_test

// Fleet-level tests of completeness against an untidy appliance (issue 10): coordinator, worker
// and shipper run on one embedded bus against the fake appliance, all of them and the fake on a
// compressed clock (scaledClock), so that hours of appliance time pass in seconds. Each test
// compares what reached the output with the fake's ground truth (darktracetest.Handler.Due).

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// scale is how much faster than real time the fleet's and the fake's clocks run: one real second
// is 20 minutes of appliance time.
const scale = 1200

// scaledClock is a clockwork.Clock whose time runs scale times faster than the real clock from
// origin; its timers and tickers fire after the real share of their duration.
type scaledClock struct {
	origin time.Time // real and scaled time at the start
}

func newScaledClock() *scaledClock { return &scaledClock{origin: time.Now()} }

func real(d time.Duration) time.Duration { return max(d/scale, time.Millisecond) }

func (c *scaledClock) Now() time.Time {
	return c.origin.Add(time.Since(c.origin) * scale)
}
func (c *scaledClock) After(d time.Duration) <-chan time.Time { return time.After(real(d)) }
func (c *scaledClock) Sleep(d time.Duration)                  { time.Sleep(real(d)) }
func (c *scaledClock) Since(t time.Time) time.Duration        { return c.Now().Sub(t) }
func (c *scaledClock) Until(t time.Time) time.Duration        { return t.Sub(c.Now()) }
func (c *scaledClock) NewTicker(d time.Duration) clockwork.Ticker {
	return scaledTicker{time.NewTicker(real(d))}
}
func (c *scaledClock) NewTimer(d time.Duration) clockwork.Timer {
	return scaledTimer{time.NewTimer(real(d))}
}
func (c *scaledClock) AfterFunc(d time.Duration, f func()) clockwork.Timer {
	return scaledTimer{time.AfterFunc(real(d), f)}
}

type scaledTicker struct{ *time.Ticker }

func (t scaledTicker) Chan() <-chan time.Time { return t.C }
func (t scaledTicker) Reset(d time.Duration)  { t.Ticker.Reset(real(d)) }

type scaledTimer struct{ *time.Timer }

func (t scaledTimer) Chan() <-chan time.Time     { return t.C }
func (t scaledTimer) Reset(d time.Duration) bool { return t.Timer.Reset(real(d)) }

// recorder is an output that keeps the events it was sent, per tag.
type recorder struct {
	mu    sync.Mutex
	byTag map[string][][]byte
}

func (r *recorder) Name() string { return "recorder" }
func (r *recorder) Close() error { return nil }
func (r *recorder) Send(_ context.Context, b *devo.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range b.Events {
		r.byTag[b.Tag] = append(r.byTag[b.Tag], slices.Clone(e.Msg))
	}
	return nil
}

func (r *recorder) events(tag string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byTag[tag])
}

// appliance is one fake appliance and the input that reads it.
type appliance struct {
	name     string
	fake     *darktracetest.Server
	services []string
}

// liveFleet runs coordinator, worker and shipper for cfg on a test bus, with every clock the
// scaled one, until the test ends.
type liveFleet struct {
	b     *bus.Bus
	cfg   *config.Config
	clock *scaledClock
	rec   *recorder
}

// startLive builds the config for the appliances (their services start at t0, polled every
// period) and starts the fleet. workers and coordinator are YAML flow mappings of extra keys.
func startLive(t *testing.T, clock *scaledClock, t0 time.Time, apps []appliance, workersYAML, coordYAML string) *liveFleet {
	t.Helper()
	y := fmt.Sprintf(`
globals: {id: live}
nats: {store_dir: %s, listen: none}
workers: {concurrency: 4%s}
coordinator: {safety_lag_in_seconds: 5, lease_ttl_in_seconds: 600, retry_failed_base_in_seconds: 60, retry_failed_max_in_seconds: 300%s}
shipper: {lease_ttl_in_seconds: 600}
outputs:
  console_1: {type: console}
inputs:
`, t.TempDir(), workersYAML, coordYAML)
	for _, a := range apps {
		y += fmt.Sprintf("  %s:\n    requests_per_second: 1000\n    credentials: {public_token: %s, private_token: %s, instance: %s}\n    services:\n",
			a.name, darktracetest.DefaultPublicToken, darktracetest.DefaultPrivateToken, a.fake.URL)
		for _, s := range a.services {
			// A tag per input keeps the appliances' events apart in the recorder.
			y += fmt.Sprintf("      %s: {start_time_in_utc_format: %q, request_period_in_seconds: 300, override_devo_tag: my.app.%s.%s}\n",
				s, t0.Format(time.RFC3339), a.name, s)
		}
	}
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatalf("config: %v\n%s", err, y)
	}
	b := bustest.NewWith(t, bus.Settings{LeaseTTL: time.Hour, DedupeTTL: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}
	kv := func(name string) jetstream.KeyValue {
		k, err := b.KV(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	fetchers := map[string]worker.Fetcher{}
	for _, a := range apps {
		dc := darktrace.ConfigFromInput(cfg.Inputs[a.name])
		dc.Now = clock.Now
		dc.Limiter = worker.NewFleetLimiter(kv(proto.BucketRate), a.name, 1000, clock)
		c, err := darktrace.New(dc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		fetchers[a.name] = c
	}
	ep := worker.Endpoints{Work: b, Results: b.JS, MaxPayload: b.MaxPayload(),
		Failures: kv(proto.BucketFailed), Heartbeats: kv(proto.BucketWorkers), Rate: kv(proto.BucketRate)}
	w, err := worker.New(ep, cfg, worker.Options{Clock: clock, Fetchers: fetchers, AckWait: 30 * time.Second,
		Backoff: darktrace.Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.CheckInputs(ctx); err != nil {
		t.Fatal(err)
	}
	run("worker", w.Run)
	rec := &recorder{byTag: map[string][][]byte{}}
	sb, err := shipper.JetStreamBus(ctx, b.JS)
	if err != nil {
		t.Fatal(err)
	}
	s, err := shipper.New(sb, cfg, shipper.Options{Clock: clock, Outputs: []devo.Output{rec}})
	if err != nil {
		t.Fatal(err)
	}
	run("shipper", s.Run)
	c, err := coordinator.New(ctx, b, b.JS, cfg, coordinator.Options{Clock: clock, Tick: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	run("coordinator", c.Run)
	return &liveFleet{b: b, cfg: cfg, clock: clock, rec: rec}
}

// deliveredEnd returns the window end up to which a lane delivered (0 before its first delivery).
func (f *liveFleet) deliveredEnd(t *testing.T, input, service string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := f.b.KV(ctx, proto.BucketDelivered)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, proto.LaneKey(input, service))
	if err != nil {
		return 0
	}
	var d proto.Delivery
	if err := proto.Decode(e.Value(), &d); err != nil {
		t.Fatal(err)
	}
	return d.End
}

// waitDelivered waits (real deadline) until every lane of the fleet delivered up to until.
func (f *liveFleet) waitDelivered(t *testing.T, until time.Time, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for _, ln := range f.cfg.Lanes() {
			if f.deliveredEnd(t, ln.Input, ln.Service) < until.UnixMilli() {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			for _, ln := range f.cfg.Lanes() {
				t.Logf("%s.%s delivered up to %s", ln.Input, ln.Service, proto.FormatMS(f.deliveredEnd(t, ln.Input, ln.Service)))
			}
			t.Fatalf("the fleet did not deliver up to %s within %v (appliance-host time now %s)", until.Format(time.RFC3339), timeout, f.clock.Now().Format(time.RFC3339))
		}
		time.Sleep(20 * time.Millisecond) // polling a condition under a deadline, not waiting for time to pass
	}
}

// failedSlots returns the failure records left in the failed-slots bucket.
func (f *liveFleet) failedSlots(t *testing.T) []proto.Failure {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := f.b.KV(ctx, proto.BucketFailed)
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []proto.Failure
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var rec proto.Failure
		if proto.Decode(e.Value(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// checkTruth compares what the fleet delivered of service (tag) with the fake's ground truth for
// event times in [start, end): every key due by at delivered exactly once, and nothing delivered
// that the fake does not know by now. It returns the number of events due.
func checkTruth(t *testing.T, f *liveFleet, fake *darktracetest.Server, service, tag string, start, end, at time.Time) int {
	t.Helper()
	count := map[string]int{}
	for _, raw := range f.rec.events(tag) {
		count[darktracetest.TruthKey(service, raw)]++
	}
	known := map[string]bool{}
	for _, e := range fake.Due(service, start, end, f.clock.Now()) {
		known[e.Key] = true
	}
	due := fake.Due(service, start, end, at)
	missing := 0
	for _, e := range due {
		switch n := count[e.Key]; {
		case n == 0:
			missing++
			if missing <= 5 {
				t.Errorf("%s: %s (visible at %s) never delivered", service, e.Key, e.VisibleAt.UTC().Format(time.RFC3339))
			}
		case n > 1:
			t.Errorf("%s: %s delivered %d times", service, e.Key, n)
		}
	}
	if missing > 0 {
		t.Errorf("%s: %d of %d due events missing", service, missing, len(due))
	}
	for k, n := range count {
		if n > 1 && !known[k] {
			t.Errorf("%s: %s delivered %d times", service, k, n)
		}
	}
	if len(due) == 0 {
		t.Fatalf("%s: the fake has nothing due in [%s, %s): the test proves nothing", service, start, end)
	}
	return len(due)
}

// TestLiveUntidyAppliance runs a live fleet for six appliance hours against an appliance that
// creates half of its breaches up to 3 h after their time, shows AI Analyst events up to 5 min
// after their createdAt (windows on createdAt), and extends, clears and expires RESPOND actions.
// Everything of the first hour must reach the output once: every breach however late (the
// creation-time query), every AI Analyst event (the look-back overlap), every state of every
// action (the state view). Without creationtime=true the late breaches are missed; without the
// overlap the late AI Analyst events are; with the window on start, no state after "created" is
// delivered.
func TestLiveUntidyAppliance(t *testing.T) {
	clock := newScaledClock()
	t0 := clock.Now().UTC().Truncate(time.Minute)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 11, Now: clock.Now, Start: t0.Add(-6 * time.Hour), End: t0.Add(12 * time.Hour),
		EventSize: 600, EventsPerHour: map[string]float64{config.ServiceModelBreaches: 40, config.ServiceIncidentEvents: 20, config.ServiceAntigena: 20},
		Untidy: darktracetest.Untidiness{LateBreachShare: 0.5, MaxBreachDelay: 3 * time.Hour, IncidentDelay: 5 * time.Minute, ActionLifecycle: true}})
	t.Cleanup(fake.Close)
	services := []string{config.ServiceModelBreaches, config.ServiceIncidentEvents, config.ServiceAntigena}
	f := startLive(t, clock, t0, []appliance{{name: "darktrace", fake: fake, services: services}}, "", "")
	until := t0.Add(6 * time.Hour)
	f.waitDelivered(t, until, 2*time.Minute)
	requests := fake.Requests()
	hours := clock.Now().Sub(t0).Hours()
	t.Logf("the appliance saw %d requests in %.1f appliance hours: %.0f per hour for %d services", requests, hours, float64(requests)/hours, len(services))
	evStart, evEnd := t0, t0.Add(time.Hour)
	for _, svc := range services {
		tag := f.cfg.Inputs["darktrace"].Services[svc].Tag
		// Late breaches are created by t0+4h, late events visible by t0+1h5m; action states
		// of actions started in the first hour are checked as far as they got by t0+5h.
		n := checkTruth(t, f, fake, svc, tag, evStart, evEnd, t0.Add(5*time.Hour))
		t.Logf("%s: %d events (states) due, each delivered once", svc, n)
	}
	if late := lateBreaches(fake, evStart, evEnd); late == 0 {
		t.Fatal("no breach of the first hour was created more than an hour late: the test proves nothing")
	} else {
		t.Logf("%d breaches of the first hour were created more than an hour after their time", late)
	}
	if left := f.failedSlots(t); len(left) > 0 {
		t.Errorf("failed slots left: %+v", left)
	}
}

// lateBreaches counts the breaches with time in [start, end) that became visible more than an
// hour after their time.
func lateBreaches(fake *darktracetest.Server, start, end time.Time) int {
	n := 0
	for _, e := range fake.Due(config.ServiceModelBreaches, start, end, end.Add(24*time.Hour)) {
		if e.VisibleAt.Sub(e.Time) > time.Hour {
			n++
		}
	}
	return n
}

// TestDateErrorHealsAndTwoAppliancesKeepTheirLanes runs two appliances in one deployment (two
// inputs, as an MSSP runs them). Appliance a answers "API DATE ERROR" to every request for 2
// hours of its time in the middle of the run; with a transient bound of 1 minute some of its slots are
// recorded as failed, and the coordinator's automatic retry heals them: in the end both
// appliances' events are delivered exactly once, each in its own lanes, and no failed slot is
// left. Without the automatic retry the failed slots stay failed and their events missing.
func TestDateErrorHealsAndTwoAppliancesKeepTheirLanes(t *testing.T) {
	clock := newScaledClock()
	t0 := clock.Now().UTC().Truncate(time.Minute)
	opts := func(seed int64) darktracetest.Options {
		return darktracetest.Options{Seed: seed, Now: clock.Now, Start: t0.Add(-6 * time.Hour), End: t0.Add(12 * time.Hour),
			EventSize: 600, EventsPerHour: map[string]float64{config.ServiceModelBreaches: 40, config.ServiceIncidentEvents: 20}}
	}
	fa, fb := darktracetest.NewServer(opts(21)), darktracetest.NewServer(opts(22))
	t.Cleanup(fa.Close)
	t.Cleanup(fb.Close)
	services := []string{config.ServiceModelBreaches, config.ServiceIncidentEvents}
	f := startLive(t, clock, t0, []appliance{{name: "a", fake: fa, services: services}, {name: "b", fake: fb, services: services}},
		", transient_errors_for_in_minutes: 1", "")
	// The fault starts half an hour into the run, on a live fleet.
	deadline := time.Now().Add(time.Minute)
	for f.deliveredEnd(t, "a", config.ServiceModelBreaches) < t0.Add(30*time.Minute).UnixMilli() {
		if time.Now().After(deadline) {
			t.Fatal("appliance a's breaches were not delivered up to t0+30m")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition under a deadline
	}
	faultAt := clock.Now()
	// Two hours of the appliance's time (6 s of real time at this clock's pace): long enough that
	// a slot's second attempt, which JetStream redelivers after a real-time delay, still meets
	// the error past the 1-minute bound, so the failure path is taken whatever the machine's load.
	fa.AddFault(darktracetest.Fault{Kind: darktracetest.FaultDateError, For: 2 * time.Hour})
	// Some slot of a fails for good and is recorded, with its next retry.
	sawFailed := false
	for deadline := time.Now().Add(time.Minute); !sawFailed; {
		for _, rec := range f.failedSlots(t) {
			if rec.Input != "a" || rec.NextRetry == 0 {
				t.Fatalf("unexpected failure record %+v", rec)
			}
			sawFailed = true
		}
		if time.Now().After(deadline) {
			t.Fatal("no slot of a was recorded as failed during the date error")
		}
		time.Sleep(5 * time.Millisecond) // polling a condition under a deadline
	}
	until := t0.Add(3 * time.Hour)
	f.waitDelivered(t, until, 2*time.Minute)
	for deadline := time.Now().Add(time.Minute); len(f.failedSlots(t)) > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("failed slots left after the date error cleared: %+v", f.failedSlots(t))
		}
		time.Sleep(10 * time.Millisecond) // polling a condition under a deadline
	}
	t.Logf("date error from %s for 2 hours of appliance time; healed", faultAt.Format(time.RFC3339))
	for _, a := range []struct {
		name string
		fake *darktracetest.Server
	}{{"a", fa}, {"b", fb}} {
		for _, svc := range services {
			tag := f.cfg.Inputs[a.name].Services[svc].Tag
			n := checkTruth(t, f, a.fake, svc, tag, t0, t0.Add(2*time.Hour), t0.Add(2*time.Hour+30*time.Minute))
			t.Logf("%s.%s: %d events due, each delivered once", a.name, svc, n)
		}
	}
}

// TestPlansByApplianceClock: an appliance whose clock is an hour behind the collector's host
// gets no window planned beyond its own now minus the safety lag, once the workers recorded its
// offset (the token check at start-up already does). Planning by the host's clock would ask it
// for an hour it has not lived yet.
func TestPlansByApplianceClock(t *testing.T) {
	t.Run("coordinator", func(t *testing.T) {
		b := bustest.New(t)
		cfg := testConfig(t, "2024-05-07T20:00:00Z", "")
		host := time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC)
		clk := newClock(host)
		ctx := context.Background()
		rate, err := b.KV(ctx, proto.BucketRate)
		if err != nil {
			t.Fatal(err)
		}
		data, err := proto.Encode(&proto.ClockOffset{V: proto.SchemaVersion, OffsetMS: (-time.Hour).Milliseconds(), At: host.UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rate.Put(ctx, proto.ClockKey("darktrace"), data); err != nil {
			t.Fatal(err)
		}
		c, err := coordinator.New(ctx, b, b.JS, cfg, coordinator.Options{Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.PlanLane(ctx, lane(t, cfg)); err != nil {
			t.Fatal(err)
		}
		items := workItems(t, b)
		if len(items) == 0 {
			t.Fatal("nothing planned")
		}
		applianceNow := host.Add(-time.Hour).UnixMilli() // safety lag 0 in testConfig
		for _, it := range items {
			if it.End > applianceNow {
				t.Fatalf("slot %d ends at %s, after the appliance's now %s", it.Seq, proto.FormatMS(it.End), proto.FormatMS(applianceNow))
			}
		}
		// A partial window is planned once a request period (60 s) has passed.
		if last := items[len(items)-1].End; last < applianceNow-time.Minute.Milliseconds() {
			t.Fatalf("planned up to %s, want up to the appliance's now %s", proto.FormatMS(last), proto.FormatMS(applianceNow))
		}
	})
	t.Run("fleet", func(t *testing.T) {
		clock := newScaledClock()
		offset := -time.Hour
		t0 := clock.Now().UTC().Add(offset).Truncate(time.Minute)
		fake := darktracetest.NewServer(darktracetest.Options{Seed: 5, Now: clock.Now, Start: t0.Add(-6 * time.Hour), End: t0.Add(12 * time.Hour),
			EventSize: 600, Untidy: darktracetest.Untidiness{ClockOffset: offset}})
		t.Cleanup(fake.Close)
		f := startLive(t, clock, t0, []appliance{{name: "darktrace", fake: fake, services: []string{config.ServiceModelBreaches}}}, "", "")
		// The appliance refuses every request dated more than 30 minutes off its clock (API DATE
		// ERROR), so nothing is delivered; its Date header still tells the workers its clock.
		// Let two appliance hours pass, then look at what was planned.
		for deadline := time.Now().Add(time.Minute); clock.Now().Before(t0.Add(3 * time.Hour)); {
			if time.Now().After(deadline) {
				t.Fatal("the scaled clock stalled")
			}
			time.Sleep(10 * time.Millisecond) // letting scaled time pass, under a deadline
		}
		ctx := context.Background()
		rate, err := f.b.KV(ctx, proto.BucketRate)
		if err != nil {
			t.Fatal(err)
		}
		e, err := rate.Get(ctx, proto.ClockKey("darktrace"))
		if err != nil {
			t.Fatalf("no clock offset recorded: %v", err)
		}
		var off proto.ClockOffset
		if err := proto.Decode(e.Value(), &off); err != nil {
			t.Fatal(err)
		}
		// The clock runs 1200 times real time: the milliseconds between the appliance's Date
		// and the worker's reading of its own clock are seconds here, so "about" is a minute.
		if d := time.Duration(off.OffsetMS)*time.Millisecond - offset; d < -time.Minute || d > time.Minute {
			t.Fatalf("recorded offset %v, want about %v", time.Duration(off.OffsetMS)*time.Millisecond, offset)
		}
		// Every window planned so far ends before the appliance's own now.
		plan, err := f.b.KV(ctx, proto.BucketPlan)
		if err != nil {
			t.Fatal(err)
		}
		pe, err := plan.Get(ctx, proto.LaneKey("darktrace", config.ServiceModelBreaches))
		if err != nil {
			t.Fatal(err)
		}
		var st proto.Plan
		if err := proto.Decode(pe.Value(), &st); err != nil {
			t.Fatal(err)
		}
		if applianceNow := clock.Now().Add(offset); st.Cursor > applianceNow.UnixMilli() {
			t.Fatalf("planned up to %s, beyond the appliance's now %s", proto.FormatMS(st.Cursor), applianceNow.Format(time.RFC3339))
		}
		if st.NextSeq < 2 {
			t.Fatal("nothing was planned")
		}
	})
}
