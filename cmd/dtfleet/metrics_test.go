package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// TestMetricsEndpoint: --metrics-listen serves the fleet's state; after a backfill the delivered
// event counters equal the appliance's ground truth and nothing is left in the backlog.
func TestMetricsEndpoint(t *testing.T) {
	env := newFleetEnv(t, 1, "")
	rec := newRecorder()
	addrc := make(chan string, 1)
	_, busc := startFleet(t, env.cfg, fleetOptions{outputs: []devo.Output{rec}, metricsListen: "127.0.0.1:0",
		onMetrics: func(a string) { addrc <- a }})
	b := <-busc
	addr := <-addrc
	waitCaughtUp(t, b, env.cfg, env.end, 3*time.Minute)
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
		fmt.Sprintf(`dtfleet_lane_events_delivered_total{input="darktrace",service="modelbreaches"} %d`, len(env.fake.Keys(config.ServiceModelBreaches))),
		fmt.Sprintf(`dtfleet_lane_events_delivered_total{input="darktrace",service="antigena"} %d`, len(env.fake.Keys(config.ServiceAntigena))),
		`dtfleet_lane_backlog_slots{input="darktrace",service="modelbreaches"} 0`,
		`dtfleet_lane_failed_slots{input="darktrace",service="modelbreaches"} 0`,
		`dtfleet_leader{holder=`,
		// The roles' own metrics, registered by this process.
		`dtfleet_role_leader{lane="darktrace.modelbreaches",role="coordinator"} 1`,
		`dtfleet_coordinator_slots_planned_total{input="darktrace",service="modelbreaches"} `,
		`dtfleet_worker_slots_total{input="darktrace",result="fetched",service="modelbreaches"} `,
		`dtfleet_worker_events_received_total{input="darktrace",service="modelbreaches"} `,
		"go_goroutines ",
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
	if strings.Contains(text, env.cfg.Inputs["darktrace"].Credentials.PrivateToken.Reveal()) {
		t.Error("the private token is in the metrics")
	}
}
