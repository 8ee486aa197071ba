// Package fleettest runs fleets in tests: a fake appliance with its data in the past and a
// configuration for it (Env), an output that records what it was sent (Recorder), a fleet started
// with the tests' defaults and stopped when the test ends (Start), and the exactly-once checks
// against the fake's ground truth. It is the one helper every package's fleet tests share.
//
// It may import internal/fleet, internal/status, internal/config and the fakes; only tests
// import it.
package fleettest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// Env is a fake appliance with all of its data in [Start, End), and a configuration for it.
type Env struct {
	Fake       *darktracetest.Server
	File       fleet.File
	Config     *config.Config
	Start, End time.Time
	Dir        string
}

// NewEnv starts a fake appliance with days of data ending two hours ago and loads a
// configuration for it that runs every service from the data's start, with an embedded NATS
// store in a temporary directory and short leases.
func NewEnv(t testing.TB, days int) *Env {
	t.Helper()
	end := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	start := end.Add(-time.Duration(days) * 24 * time.Hour)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 7, Start: start, End: end, EventSize: 800})
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	st := start.Format(time.RFC3339)
	e := &Env{Fake: fake, Start: start, End: end, Dir: dir, File: fleet.File{
		Globals:     fleet.FileGlobals{ID: "test", Name: "dtfleet-test"},
		NATS:        fleet.FileNATS{StoreDir: filepath.Join(dir, "data"), Listen: "none"},
		Workers:     &fleet.FileWorkers{Concurrency: 8},
		Coordinator: &fleet.FileCoordinator{SafetyLagInSeconds: fleet.Ptr(0), LeaseTTLInSeconds: 2},
		Shipper:     &fleet.FileShipper{LeaseTTLInSeconds: 2},
		Outputs: map[string]fleet.FileOutput{"file_1": {Type: config.OutputFile,
			Config: fleet.FileOutputConfig{Path: filepath.Join(dir, "out", "devo.log")}}},
		Inputs: map[string]fleet.FileInput{"darktrace": {
			RequestsPerSecond: 1000,
			Credentials:       fleet.FileCredentials{PublicToken: darktracetest.DefaultPublicToken, PrivateToken: darktracetest.DefaultPrivateToken, Instance: fake.URL},
			Services: map[string]fleet.FileService{
				config.ServiceModelBreaches: {StartTime: st}, config.ServiceIncidentEvents: {StartTime: st}, config.ServiceAntigena: {StartTime: st},
				config.ServiceStatus: {}, config.ServiceSummary: {},
			},
		}},
	}}
	e.Reload(t)
	return e
}

// Reload writes e.File to Dir/config.yaml and loads it into e.Config, after a test changed it.
func (e *Env) Reload(t testing.TB) {
	t.Helper()
	cfg, err := e.File.Load(filepath.Join(e.Dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	e.Config = cfg
}

// Logger is the tests' logger: info to stderr with -v, nothing otherwise.
func Logger(testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// Start starts f (all roles unless f.Roles says otherwise) with the tests' defaults (no
// listener, a 50 ms coordinator tick, Logger) and stops it when the test ends.
func Start(t testing.TB, f fleet.Fleet) *fleet.Running {
	t.Helper()
	r, err := StartErr(t, f)
	if err != nil {
		t.Fatalf("starting the fleet: %v", err)
	}
	return r
}

// StartErr is Start for a fleet that may fail to start; it returns fleet.Start's error.
func StartErr(t testing.TB, f fleet.Fleet) (*fleet.Running, error) {
	t.Helper()
	if f.Roles == (fleet.Roles{}) {
		f.Roles = fleet.AllRoles
	}
	if f.Overrides.Listen == "" {
		f.Overrides.Listen = "none"
	}
	if f.Overrides.Tick == 0 {
		f.Overrides.Tick = 50 * time.Millisecond
	}
	if f.Deps.Logger == nil {
		f.Deps.Logger = Logger(t)
	}
	r, err := fleet.Start(context.Background(), f)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = r.Stop() })
	return r, nil
}

// readTimeout bounds each read of the fleet's state while waiting.
const readTimeout = 5 * time.Second

// WaitFor waits until done accepts the fleet's state read from src, failing the test after
// timeout. A read that fails is retried (a cluster electing leaders answers with errors for a
// while); the last error is reported on timeout.
func WaitFor(t testing.TB, src status.KVSource, cfg *config.Config, timeout time.Duration, what string, done func(*status.Status) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		// Each read has its own deadline: a request whose reply is lost (a node that died) would
		// otherwise wait for the whole wait's deadline.
		rctx, cancelRead := context.WithTimeout(ctx, readTimeout)
		st, err := status.Read(rctx, src, cfg, time.Now())
		cancelRead()
		if err == nil && done(st) {
			return
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
		case <-tick.C:
		}
	}
}

// WaitCaughtUp waits until every windowed lane delivered up to end and every snapshot lane once.
func WaitCaughtUp(t testing.TB, src status.KVSource, cfg *config.Config, end time.Time, timeout time.Duration) {
	t.Helper()
	WaitFor(t, src, cfg, timeout, "the fleet to catch up", func(st *status.Status) bool { return CaughtUp(st, end) })
}

// CaughtUp reports whether every lane of st delivered its slots up to end, and the model
// breaches lanes an hour past it: breaches are fetched by creation time, and the fake creates a
// breach up to an hour after its time, so the last ones of the data are in slots after end.
func CaughtUp(st *status.Status, end time.Time) bool {
	if !st.CaughtUp(end) {
		return false
	}
	for _, l := range st.Lanes {
		if l.Service == config.ServiceModelBreaches && l.DeliveredUntil.Before(end.Add(time.Hour)) {
			return false
		}
	}
	return true
}

// LaneOf returns cfg's lane of service.
func LaneOf(t testing.TB, cfg *config.Config, service string) config.Lane {
	t.Helper()
	for _, ln := range cfg.Lanes() {
		if ln.Service == service {
			return ln
		}
	}
	t.Fatalf("no lane %s", service)
	return config.Lane{}
}

// Recorder is an output that keeps what it was sent, per tag, and fails the Send calls whose
// 1-based numbers FailAt holds.
type Recorder struct {
	mu     sync.Mutex
	byTag  map[string][][]byte
	sends  int
	failAt map[int]bool
}

var _ devo.Output = (*Recorder)(nil)

// NewRecorder returns a recorder failing the Send calls numbered failAt.
func NewRecorder(failAt ...int) *Recorder {
	r := &Recorder{byTag: map[string][][]byte{}, failAt: map[int]bool{}}
	for _, n := range failAt {
		r.failAt[n] = true
	}
	return r
}

// Name implements devo.Output.
func (r *Recorder) Name() string { return "recorder" }

// Close implements devo.Output.
func (r *Recorder) Close() error { return nil }

// Send implements devo.Output.
func (r *Recorder) Send(_ context.Context, b *devo.Batch) error {
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

// Events returns the messages delivered with tag, in delivery order.
func (r *Recorder) Events(tag string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byTag[tag])
}

// EventTime reads a windowed event's time field (epoch ms).
func EventTime(t testing.TB, service string, raw []byte) int64 {
	t.Helper()
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatalf("event is not JSON: %v: %s", err, raw)
	}
	field := map[string]string{config.ServiceModelBreaches: "time", config.ServiceIncidentEvents: "createdAt", config.ServiceAntigena: "start"}[service]
	n, _ := m[field].(json.Number)
	v, _ := n.Int64()
	return v
}

// CheckCounts reports every ground-truth key (want) that was not delivered exactly once, and
// every delivered key that is not in the ground truth; count is how often each key was delivered.
func CheckCounts(t testing.TB, service string, want []string, count map[string]int) {
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

// CheckExactlyOnce compares the events delivered per tag with fake's ground truth for every
// windowed lane of cfg, checks event-time order for the services whose windows filter on event
// time, and that every snapshot lane delivered something.
func CheckExactlyOnce(t testing.TB, fake *darktracetest.Server, cfg *config.Config, delivered func(tag string) [][]byte) {
	t.Helper()
	CheckDelivered(t, fake, cfg, delivered, nil)
}

// CheckDelivered is CheckExactlyOnce without the order check for the services in unordered (a
// replayed slot is delivered after the slots that follow it).
func CheckDelivered(t testing.TB, fake *darktracetest.Server, cfg *config.Config, delivered func(tag string) [][]byte, unordered map[string]bool) {
	t.Helper()
	for _, ln := range cfg.Lanes() {
		got := delivered(ln.Svc.Tag)
		if ln.Svc.Snapshot {
			if len(got) == 0 {
				t.Errorf("%s: no snapshot delivered", ln.Service)
			}
			continue
		}
		want := fake.Keys(ln.Service)
		if len(want) == 0 {
			t.Fatalf("%s: the fake has no data", ln.Service)
		}
		count := map[string]int{}
		for _, raw := range got {
			count[darktracetest.Key(ln.Service, raw)]++
		}
		CheckCounts(t, ln.Service, want, count)
		// Breaches come in the order of their creation-time slots, antigena states in that of their
		// state-time slots: only AI Analyst events are in event-time order across slots.
		if ln.Service == config.ServiceIncidentEvents && !unordered[ln.Service] {
			var last int64
			for i, raw := range got {
				ts := EventTime(t, ln.Service, raw)
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
