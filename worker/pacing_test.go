package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// pacedConfig is testConfig with the adaptive limit's bound and the rate ceiling given.
func pacedConfig(t *testing.T, instance string, concurrency int, rps float64) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
outputs: {console_1: {type: console}}
workers: {concurrency: %d}
inputs:
  darktrace:
    requests_per_second: %v
    credentials: {public_token: %s, private_token: %s, instance: %q}
    services:
      modelbreaches: {look_back_in_minutes: 0}
`, concurrency, rps, darktracetest.DefaultPublicToken, darktracetest.DefaultPrivateToken, instance)
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startWorker runs a worker until the test ends and returns it.
func startWorker(t *testing.T, b *bus.Bus, cfg *config.Config, opts worker.Options) *worker.Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := worker.New(endpoints(t, b), cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker.Run = %v", err)
		}
	})
	return w
}

// publishSlots publishes n hourly slots ending at end.
func publishSlots(t *testing.T, b *bus.Bus, n int, end time.Time) {
	t.Helper()
	from := end.Add(-time.Duration(n) * time.Hour)
	for i := range n {
		s := from.Add(time.Duration(i) * time.Hour)
		publishItem(t, b, uint64(i+1), s, s.Add(time.Hour))
	}
}

// TestPacingGrowsOnAFastAppliance: with an appliance that answers at once, the worker's limit
// leaves its start (1) and more than one request reaches the appliance at a time.
func TestPacingGrowsOnAFastAppliance(t *testing.T) {
	b := bustest.New(t)
	end := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 3, Start: end.Add(-48 * time.Hour), End: end, EventSize: 300,
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: 5}, Latency: 30 * time.Millisecond})
	t.Cleanup(fake.Close)
	w := startWorker(t, b, pacedConfig(t, fake.URL, 16, 1000), worker.Options{})
	if lim, ok := w.PacingLimit("darktrace"); !ok || lim != 1 {
		t.Fatalf("limit before any request = %d, %v; want 1 (workers.min_concurrency)", lim, ok)
	}
	const slots = 40
	publishSlots(t, b, slots, end)
	waitDone(t, b, slots)
	waitSettled(t, b)
	if lim, _ := w.PacingLimit("darktrace"); lim <= 1 {
		t.Errorf("limit %d after %d fast answers, want more than 1", lim, slots)
	}
	if m := fake.MaxInFlight(); m < 2 {
		t.Errorf("the appliance saw at most %d request in flight, want at least 2", m)
	}
	if m := fake.MaxInFlight(); m > 16 {
		t.Errorf("the appliance saw %d requests in flight, more than workers.concurrency (16)", m)
	}
	// The worker's pacing record is in the rate bucket for status (written at start and every
	// heartbeat period).
	kv, err := b.KV(context.Background(), proto.BucketRate)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for k := range keys.Keys() {
		if in, ok := proto.PaceInput(k); ok && in == "darktrace" {
			e, err := kv.Get(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			var p proto.Pace
			if err := proto.Decode(e.Value(), &p); err != nil {
				t.Fatal(err)
			}
			found = p.Max == 16 && p.Limit >= 1
		}
	}
	if !found {
		t.Error("no pacing record of input darktrace with max 16 in the rate bucket")
	}
}

// TestPacingShrinksOn429: an appliance that answers 429 beyond 3 requests in flight makes the
// limit shrink (counted by reason) and stay far below its bound of 32, which the slow start would
// reach within a few round trips without the decreases; every slot is still fetched.
func TestPacingShrinksOn429(t *testing.T) {
	b := bustest.New(t)
	end := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 3, Start: end.Add(-48 * time.Hour), End: end, EventSize: 300,
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: 5}, Latency: 30 * time.Millisecond, RateLimitAbove: 3})
	t.Cleanup(fake.Close)
	reg := prometheus.NewRegistry()
	w := startWorker(t, b, pacedConfig(t, fake.URL, 32, 1000), worker.Options{Registerer: reg,
		Backoff: darktrace.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	const slots = 40
	publishSlots(t, b, slots, end)
	for seq := uint64(1); seq <= slots; seq++ {
		if d := waitDone(t, b, seq); d.Failed {
			t.Fatalf("slot %d failed: %+v", seq, d)
		}
	}
	waitSettled(t, b)
	if fake.Throttled() == 0 {
		t.Fatal("the appliance never answered 429; the test proves nothing")
	}
	if n := counter(t, reg, "dtfleet_worker_pacing_decreases_total", map[string]string{"reason": "throttled"}); n < 1 {
		t.Errorf("%v decreases on 429, want at least 1", n)
	}
	if lim, _ := w.PacingLimit("darktrace"); lim > 8 {
		t.Errorf("limit %d after the appliance throttled beyond 3 in flight, want at most 8", lim)
	}
}

// TestPacingKeepsTheCeiling: however much the limit grows, the fleet-wide ceiling
// (requests_per_second) holds: the appliance never counts more than the ceiling in any
// one-second window (one more at a window's edge for the reservation's rounding).
func TestPacingKeepsTheCeiling(t *testing.T) {
	b := bustest.New(t)
	end := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	h := darktracetest.NewHandler(darktracetest.Options{Seed: 3, Start: end.Add(-48 * time.Hour), End: end, EventSize: 300,
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: 5}, Latency: 5 * time.Millisecond})
	var mu sync.Mutex
	var arrivals []time.Time
	hs := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/modelbreaches" {
			mu.Lock()
			arrivals = append(arrivals, time.Now())
			mu.Unlock()
		}
		h.ServeHTTP(rw, r)
	}))
	t.Cleanup(func() { h.Close(); hs.CloseClientConnections(); hs.Close() })
	const rps, slots = 20, 45
	startWorker(t, b, pacedConfig(t, hs.URL, 32, rps), worker.Options{})
	publishSlots(t, b, slots, end)
	waitDone(t, b, slots)
	waitSettled(t, b)
	mu.Lock()
	defer mu.Unlock()
	most := 0
	for i, a := range arrivals {
		n := 0
		for _, b := range arrivals[i:] {
			if b.Sub(a) < time.Second {
				n++
			}
		}
		most = max(most, n)
	}
	if most > rps+1 {
		t.Errorf("%d requests in one second, ceiling %d", most, rps)
	}
	if len(arrivals) < slots {
		t.Errorf("%d requests, want at least %d", len(arrivals), slots)
	}
}

// TestPullersTakeNoMoreThanThePacingHolds: while the appliance has not answered once, the limit
// stays at its start (1), so the worker takes at most 2×limit+1 work items from the stream and
// leaves the rest to worker processes with room, although workers.concurrency (32) pullers run.
func TestPullersTakeNoMoreThanThePacingHolds(t *testing.T) {
	b := bustest.New(t)
	end := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	fake := darktracetest.NewHandler(darktracetest.Options{Seed: 3, Start: end.Add(-48 * time.Hour), End: end, EventSize: 300,
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: 5}})
	release := make(chan struct{})
	var reached sync.Once
	arrived := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/modelbreaches" {
			reached.Do(func() { close(arrived) })
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(fake.Close)
	var unblock sync.Once
	t.Cleanup(func() { unblock.Do(func() { close(release) }) })
	startWorker(t, b, pacedConfig(t, srv.URL, 32, 1000), worker.Options{})
	const slots = 10
	publishSlots(t, b, slots, end)
	select {
	case <-arrived:
	case <-time.After(30 * time.Second):
		t.Fatal("no request reached the appliance in 30 s")
	}
	ctx := context.Background()
	c, err := b.JS.Consumer(ctx, proto.StreamWork, proto.ConsumerWorkers)
	if err != nil {
		t.Fatal(err)
	}
	// The 32 pullers ask for items once a second at most (FetchMaxWait); over three of their
	// rounds, the items taken must stay at twice the pacing's limit (1) plus one ready to go.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		ci, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ci.NumAckPending > 3 {
			t.Fatalf("the worker holds %d work items while its limit is 1; want at most 3", ci.NumAckPending)
		}
		runtime.Gosched()
	}
	unblock.Do(func() { close(release) })
	for seq := uint64(1); seq <= slots; seq++ {
		if d := waitDone(t, b, seq); d.Failed {
			t.Fatalf("slot %d failed: %+v", seq, d)
		}
	}
	waitSettled(t, b)
}
