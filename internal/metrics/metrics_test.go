package metrics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/metrics"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// TestMetricsEndpoint: a fleet with a metrics listener serves its state; after a backfill the
// delivered event counters equal the appliance's ground truth and nothing is left in the backlog.
func TestMetricsEndpoint(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	rec := fleettest.NewRecorder()
	addrc := make(chan string, 1)
	reg := metrics.NewRegistry()
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config,
		Deps:      fleet.Dependencies{Outputs: []devo.Output{rec}, Registerer: reg, Gatherer: reg},
		Overrides: fleet.Overrides{MetricsListen: "127.0.0.1:0"},
		Hooks:     fleet.Hooks{OnMetrics: func(a string) { addrc <- a }}})
	addr := <-addrc
	fleettest.WaitCaughtUp(t, f.Bus, env.Config, env.End, 3*time.Minute)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	text := string(body)
	want := []string{
		"dtfleet_bus_up 1",
		fmt.Sprintf(`dtfleet_lane_events_delivered_total{input="darktrace",service="modelbreaches"} %d`, len(env.Fake.Keys(config.ServiceModelBreaches))),
		fmt.Sprintf(`dtfleet_lane_events_delivered_total{input="darktrace",service="antigena"} %d`, len(env.Fake.Keys(config.ServiceAntigena))),
		`dtfleet_lane_backlog_slots{input="darktrace",service="modelbreaches"} 0`,
		`dtfleet_lane_failed_slots{input="darktrace",service="modelbreaches"} 0`,
		`dtfleet_leader{holder=`,
		// The roles' own metrics, registered by this process.
		`dtfleet_role_leader{lane="darktrace.modelbreaches",role="coordinator"} 1`,
		`dtfleet_role_leader{lane="darktrace.modelbreaches",role="shipper"} 1`,
		`dtfleet_coordinator_slots_planned_total{input="darktrace",service="modelbreaches"} `,
		`dtfleet_worker_slots_total{input="darktrace",result="fetched",service="modelbreaches"} `,
		`dtfleet_worker_events_received_total{input="darktrace",service="modelbreaches"} `,
		fmt.Sprintf(`dtfleet_shipper_events_sent_total{input="darktrace",service="modelbreaches"} %d`, len(env.Fake.Keys(config.ServiceModelBreaches))),
		"go_goroutines ",
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	if strings.Contains(text, env.Config.Inputs["darktrace"].Credentials.PrivateToken.Reveal()) {
		t.Error("the private token is in the metrics")
	}
	// The fleet unregisters its collector when it stops, so the registry can serve a next run.
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(metrics.NewCollector(f.Bus, env.Config, time.Now)); err != nil {
		t.Errorf("registering a collector after the fleet stopped: %v", err)
	}
}

// unreachable is a bus that cannot open any bucket.
type unreachable struct{}

func (unreachable) KV(context.Context, string) (jetstream.KeyValue, error) {
	return nil, errors.New("nats: no servers available for connection")
}

// TestCollectorBusDown: a scrape that cannot read the fleet's state exports bus_up 0 and fails,
// instead of exporting stale or empty lane figures.
func TestCollectorBusDown(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.NewCollector(unreachable{}, env.Config, time.Now))
	mfs, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "reading the fleet's state") {
		t.Errorf("Gather error = %v, want one saying the state could not be read", err)
	}
	var up []float64
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "dtfleet_lane_") {
			t.Errorf("lane metric %s exported while the bus is down", mf.GetName())
		}
		if mf.GetName() == "dtfleet_bus_up" {
			for _, m := range mf.GetMetric() {
				up = append(up, m.GetGauge().GetValue())
			}
		}
	}
	if len(up) != 1 || up[0] != 0 {
		t.Errorf("dtfleet_bus_up = %v, want [0]", up)
	}
}

// TestServerStopsWithContext: Run fails at once on an address it cannot listen on, and returns
// nil once its context ends.
func TestServerStopsWithContext(t *testing.T) {
	reg := metrics.NewRegistry()
	if err := (&metrics.Server{Addr: "256.0.0.1:1", Gatherer: reg}).Run(context.Background()); err == nil {
		t.Error("Run on an invalid address returned nil")
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- (&metrics.Server{Addr: "127.0.0.1:0", Gatherer: reg, Ready: func(a string) { addrc <- a }}).Run(ctx)
	}()
	addr := <-addrc
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics: %d", resp.StatusCode)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run after cancel = %v", err)
	}
}

// TestHealthAndReadiness: /healthz answers 200 whatever Readiness says; /readyz answers 503
// with Readiness's reason while it returns an error, and 200 once it returns nil.
func TestHealthAndReadiness(t *testing.T) {
	reg := metrics.NewRegistry()
	var ready atomic.Pointer[error]
	notYet := errors.New("roles not started")
	ready.Store(&notYet)
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- (&metrics.Server{Addr: "127.0.0.1:0", Gatherer: reg, Ready: func(a string) { addrc <- a },
			Readiness: func() error { return *ready.Load() }}).Run(ctx)
	}()
	addr := <-addrc
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	tests := []struct {
		ready      error
		path       string
		code       int
		bodyPrefix string
	}{
		{notYet, "/healthz", http.StatusOK, "ok"},
		{notYet, "/readyz", http.StatusServiceUnavailable, "not ready: roles not started"},
		{nil, "/healthz", http.StatusOK, "ok"},
		{nil, "/readyz", http.StatusOK, "ready"},
	}
	for _, tt := range tests {
		ready.Store(&tt.ready)
		code, body := get(tt.path)
		if code != tt.code || !strings.HasPrefix(body, tt.bodyPrefix) {
			t.Errorf("ready=%v GET %s = %d %q, want %d %q…", tt.ready, tt.path, code, body, tt.code, tt.bodyPrefix)
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Run after cancel = %v", err)
	}
}
