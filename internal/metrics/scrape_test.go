package metrics_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/metrics"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
)

// scrape GETs /metrics of addr and parses it.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// sum adds the values (a histogram's count) of fams[name]'s series whose labels include want.
func sum(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	var total float64
	found := false
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total, found
}

// TestScrapeMatchesFakes runs a fleet against the fake appliance and a fake Devo relay, scrapes
// its /metrics, and checks the per-process series against what the fakes saw: the requests the
// appliance answered per endpoint, the lines the relay received. The values are read until
// they agree (the snapshot lanes keep polling, so a scrape may land between a request and its
// count), within a deadline.
func TestScrapeMatchesFakes(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	sink, err := devotest.NewServer(devotest.Options{RelayAddr: "127.0.0.1:0", CountOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	host, port, _ := net.SplitHostPort(sink.RelayAddr())
	p, _ := strconv.Atoi(port)
	env.File.Outputs = map[string]fleet.FileOutput{"relay_1": {Type: config.OutputRelay, Config: fleet.FileOutputConfig{Address: host, Port: p}}}
	env.Reload(t)

	addrc := make(chan string, 1)
	reg := metrics.NewRegistry()
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config,
		Deps:      fleet.Dependencies{Registerer: reg, Gatherer: reg},
		Overrides: fleet.Overrides{MetricsListen: "127.0.0.1:0"},
		Hooks:     fleet.Hooks{OnMetrics: func(a string) { addrc <- a }}})
	addr := <-addrc
	fleettest.WaitCaughtUp(t, f.Bus, env.Config, env.End, 3*time.Minute)

	dt := map[string]string{"input": "darktrace"}
	relay := map[string]string{"output": "relay_1"}
	checks := []struct {
		what string
		got  func(map[string]*dto.MetricFamily) (float64, bool)
		want func() float64
	}{
		{"requests to /modelbreaches", func(m map[string]*dto.MetricFamily) (float64, bool) {
			return sum(m, "dtfleet_darktrace_request_duration_seconds", map[string]string{"input": "darktrace", "endpoint": "/modelbreaches", "code_class": "2xx"})
		}, func() float64 { return float64(env.Fake.EndpointRequests("/modelbreaches")) }},
		{"requests to the appliance", func(m map[string]*dto.MetricFamily) (float64, bool) {
			return sum(m, "dtfleet_darktrace_request_duration_seconds", dt)
		}, func() float64 { return float64(env.Fake.Requests()) }},
		{"lines received by Devo", func(m map[string]*dto.MetricFamily) (float64, bool) {
			return sum(m, "dtfleet_devo_lines_sent_total", relay)
		}, func() float64 { return float64(sink.Count()) }},
		{"modelbreaches lines", func(m map[string]*dto.MetricFamily) (float64, bool) {
			return sum(m, "dtfleet_lane_events_delivered_total", map[string]string{"service": "modelbreaches"})
		}, func() float64 { return float64(len(env.Fake.Keys(config.ServiceModelBreaches))) }},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range checks {
		for {
			got, ok := c.got(scrape(t, addr))
			want := c.want()
			if ok && got == want && want > 0 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: metrics say %v (present %v), the fake %v", c.what, got, ok, want)
			case <-time.After(50 * time.Millisecond): // the poll interval, not a wait for an event
			}
		}
	}

	fams := scrape(t, addr)
	// Series that must exist with a value that follows from a healthy run.
	if v, _ := sum(fams, "dtfleet_devo_batches_confirmed_total", relay); v < 1 {
		t.Errorf("dtfleet_devo_batches_confirmed_total = %v, want at least 1", v)
	}
	if v, ok := sum(fams, "dtfleet_devo_reconnects_total", relay); !ok || v != 0 {
		t.Errorf("dtfleet_devo_reconnects_total = %v (present %v), want 0 against a healthy relay", v, ok)
	}
	lines, _ := sum(fams, "dtfleet_devo_lines_sent_total", relay)
	if v, _ := sum(fams, "dtfleet_devo_bytes_sent_total", relay); v < lines*2 {
		t.Errorf("dtfleet_devo_bytes_sent_total = %v for %v lines", v, lines)
	}
	if v, _ := sum(fams, "dtfleet_devo_confirm_duration_seconds", relay); v < 1 {
		t.Errorf("dtfleet_devo_confirm_duration_seconds has %v observations", v)
	}
	if v, ok := sum(fams, "dtfleet_darktrace_retries_total", dt); ok && v != 0 {
		t.Errorf("dtfleet_darktrace_retries_total = %v against a healthy appliance", v)
	}
	if _, ok := sum(fams, "dtfleet_jetstream_consumer_pending", map[string]string{"stream": "DTF_WORK", "consumer": "dtf_workers"}); !ok {
		t.Error("no dtfleet_jetstream_consumer_pending for the workers' consumer")
	}
	for _, role := range []string{"coordinator", "shipper"} {
		if v, _ := sum(fams, "dtfleet_role_leader", map[string]string{"role": role, "lane": "darktrace.modelbreaches"}); v != 1 {
			t.Errorf("dtfleet_role_leader{role=%q} = %v, want 1", role, v)
		}
	}
	for _, name := range []string{"dtfleet_worker_slots_total", "dtfleet_worker_events_received_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	lagFam := fams["dtfleet_lane_lag_seconds"]
	if lagFam == nil || len(lagFam.GetMetric()) == 0 {
		t.Fatal("no dtfleet_lane_lag_seconds")
	}
	for _, m := range lagFam.GetMetric() {
		if v := m.GetGauge().GetValue(); v < 0 {
			t.Errorf("dtfleet_lane_lag_seconds%v = %v, negative", m.GetLabel(), v)
		}
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /readyz of a running fleet: %d", resp.StatusCode)
	}
}
