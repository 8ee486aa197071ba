package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(withBinaryCleanup{m},
		// httptest's idle keep-alive connections and the embedded server's leftovers close asynchronously.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// recorder is an output that keeps what it was sent, per tag, and can fail on demand.
type recorder struct {
	mu     sync.Mutex
	byTag  map[string][][]byte
	sends  int
	failAt map[int]bool // fail these Send calls (1-based)
}

func newRecorder() *recorder { return &recorder{byTag: map[string][][]byte{}, failAt: map[int]bool{}} }

func (r *recorder) Name() string { return "recorder" }
func (r *recorder) Close() error { return nil }
func (r *recorder) Send(_ context.Context, b *devo.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends++
	if r.failAt[r.sends] {
		return errors.New("injected delivery failure")
	}
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

// fleetEnv is a fake appliance with all of its data in the past, and a config for it.
type fleetEnv struct {
	fake  *darktracetest.Server
	cfg   *config.Config
	yaml  string
	start time.Time
	end   time.Time
	dir   string
}

func newFleetEnv(t *testing.T, days int, extra string) *fleetEnv {
	t.Helper()
	end := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	start := end.Add(-time.Duration(days) * 24 * time.Hour)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 7, Start: start, End: end, EventSize: 800})
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	y := fmt.Sprintf(`
globals: {id: test, name: dtfleet-test}
nats: {store_dir: %s/data, listen: none}
workers: {concurrency: 8}
coordinator: {safety_lag_in_seconds: 0, lease_ttl_in_seconds: 2}
shipper: {lease_ttl_in_seconds: 2}
outputs:
  file_1: {type: file, config: {path: %s/out/devo.log}}
inputs:
  darktrace:
    requests_per_second: 1000
    credentials: {public_token: %s, private_token: %s, instance: %s}
    services:
      modelbreaches: {start_time_in_utc_format: %q}
      aianalyst_incidentevents: {start_time_in_utc_format: %q}
      antigena: {start_time_in_utc_format: %q}
      status: {}
      summarystatistics: {}
%s`, dir, dir, darktracetest.DefaultPublicToken, darktracetest.DefaultPrivateToken, fake.URL,
		start.Format(time.RFC3339), start.Format(time.RFC3339), start.Format(time.RFC3339), extra)
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fleetEnv{fake: fake, cfg: cfg, yaml: y, start: start, end: end, dir: dir}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// startFleet runs the fleet in-process until the returned stop is called.
func startFleet(t *testing.T, cfg *config.Config, o fleetOptions) (stop func() error, busc <-chan *bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan *bus.Bus, 1)
	prev := o.onBus
	o.onBus = func(b *bus.Bus) {
		if prev != nil {
			prev(b)
		}
		ch <- b
	}
	if o.listen == "" {
		o.listen = "none"
	}
	if o.tick == 0 {
		o.tick = 50 * time.Millisecond
	}
	errc := make(chan error, 1)
	go func() { errc <- runFleet(ctx, cfg, allRoles, o, testLogger(t)) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-errc
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop, ch
}

// waitCaughtUp waits until every windowed lane delivered up to end and every snapshot lane once.
func waitCaughtUp(t *testing.T, b *bus.Bus, cfg *config.Config, end time.Time, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		done, err := caughtUp(b, cfg, end)
		if done {
			return
		}
		if err != nil {
			lastErr = err // a cluster electing new leaders answers with errors for a while
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleet did not catch up within %v (last error: %v)", timeout, lastErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// caughtUp reports whether every windowed lane delivered up to end and every snapshot lane once.
func caughtUp(b *bus.Bus, cfg *config.Config, end time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := b.KV(ctx, proto.BucketDelivered)
	if err != nil {
		return false, err
	}
	for _, ln := range cfg.Lanes() {
		e, err := kv.Get(ctx, proto.LaneKey(ln.Input, ln.Service))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		var d proto.Delivery
		if err := proto.Decode(e.Value(), &d); err != nil {
			return false, err
		}
		// Breaches are fetched by creation time: one created after end (a tidy fake creates them
		// at most an hour late) is in a slot after end.
		need := end
		if ln.Service == config.ServiceModelBreaches {
			need = end.Add(time.Hour)
		}
		if (ln.Svc.Snapshot && d.Seq < 1) || (!ln.Svc.Snapshot && d.End < need.UnixMilli()) {
			return false, nil
		}
	}
	return true, nil
}

// eventTime reads a windowed event's time field.
func eventTime(t *testing.T, service string, raw []byte) int64 {
	var m map[string]json.Number
	d := json.NewDecoder(bytesReader(raw))
	d.UseNumber()
	var any map[string]any
	if err := d.Decode(&any); err != nil {
		t.Fatalf("event is not JSON: %v: %s", err, raw)
	}
	_ = m
	field := map[string]string{config.ServiceModelBreaches: "time", config.ServiceIncidentEvents: "createdAt", config.ServiceAntigena: "start"}[service]
	n, _ := any[field].(json.Number)
	v, _ := n.Int64()
	return v
}

// checkExactlyOnce compares delivered events with the fake's ground truth for every windowed
// service and checks event-time order for the services whose windows filter on event time.
func checkExactlyOnce(t *testing.T, env *fleetEnv, delivered func(tag string) [][]byte) {
	t.Helper()
	checkDelivered(t, env, delivered, nil)
}

// checkCounts reports every ground-truth key (want) that was not delivered exactly once, and every
// delivered key that is not in the ground truth; count is how often each key was delivered.
func checkCounts(t *testing.T, service string, want []string, count map[string]int) {
	t.Helper()
	truth := make(map[string]bool, len(want))
	for _, k := range want {
		truth[k] = true
		switch count[k] {
		case 1:
		case 0:
			t.Errorf("%s: event %s lost", service, k)
		default:
			t.Errorf("%s: event %s delivered %d times", service, k, count[k])
		}
	}
	for k, n := range count {
		if !truth[k] {
			t.Errorf("%s: delivered %d× an event %q that is not in the ground truth", service, n, k)
		}
	}
}

// checkDelivered is checkExactlyOnce without the order check for the services in unordered (a
// replayed slot is delivered after the slots that follow it).
func checkDelivered(t *testing.T, env *fleetEnv, delivered func(tag string) [][]byte, unordered map[string]bool) {
	t.Helper()
	for _, ln := range env.cfg.Lanes() {
		got := delivered(ln.Svc.Tag)
		if ln.Svc.Snapshot {
			if len(got) == 0 {
				t.Errorf("%s: no snapshot delivered", ln.Service)
			}
			continue
		}
		want := env.fake.Keys(ln.Service)
		if len(want) == 0 {
			t.Fatalf("%s: the fake has no data", ln.Service)
		}
		count := map[string]int{}
		for _, raw := range got {
			count[darktracetest.Key(ln.Service, raw)]++
		}
		checkCounts(t, ln.Service, want, count)
		// Breaches come in the order of their creation-time slots, antigena states in that of their
		// state-time slots: only AI Analyst events are in event-time order across slots.
		if ln.Service == config.ServiceIncidentEvents && !unordered[ln.Service] {
			var last int64
			for i, raw := range got {
				ts := eventTime(t, ln.Service, raw)
				if ts < last {
					t.Errorf("%s: event %d at %d delivered after one at %d", ln.Service, i, ts, last)
					break
				}
				last = ts
			}
		}
		t.Logf("%s: %d events delivered exactly once", ln.Service, len(want))
	}
}

func TestFleetBackfillExactlyOnce(t *testing.T) {
	env := newFleetEnv(t, 7, "")
	rec := newRecorder()
	_, busc := startFleet(t, env.cfg, fleetOptions{outputs: []devo.Output{rec}})
	b := <-busc
	waitCaughtUp(t, b, env.cfg, env.end, 3*time.Minute)
	checkExactlyOnce(t, env, rec.events)
}
