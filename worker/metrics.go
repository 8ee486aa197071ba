package worker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the result label of dtfleet_worker_slots_total.
const (
	resultFetched = "fetched" // the slot's events were published with its done marker
	resultFailed  = "failed"  // the slot failed for good and left a failure record
)

// metrics are one worker process's own counters (the fleet-wide figures are read from NATS by
// the metrics server).
type metrics struct {
	slots   *prometheus.CounterVec
	events  *prometheus.CounterVec
	dropped *prometheus.CounterVec

	// The adaptive pacing of each input (pacing.go).
	paceLimit     *prometheus.GaugeVec
	paceInFlight  *prometheus.GaugeVec
	paceFloor     *prometheus.GaugeVec
	paceDecreases *prometheus.CounterVec
}

// Values of the reason label of dtfleet_worker_events_dropped_total.
const reasonTooLarge = "too_large" // larger than workers.max_event_size_in_mb

// newMetrics creates the worker's metrics and registers them with reg; a nil reg registers
// nothing (the counters still count, unseen).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		slots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_worker_slots_total",
			Help: "Slots this worker process settled, by result: fetched, or failed for good.",
		}, []string{"input", "service", "result"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_worker_events_received_total",
			Help: "Raw events this worker process received from the appliance (retried attempts count again).",
		}, []string{"input", "service"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_worker_events_dropped_total",
			Help: "Events this worker process dropped instead of delivering, by reason (too_large: over workers.max_event_size_in_mb); each is logged with its key.",
		}, []string{"input", "service", "reason"}),
		paceLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dtfleet_worker_pacing_limit",
			Help: "Requests this worker process may have in flight to the input's appliance now (the adaptive limit, at most workers.concurrency).",
		}, []string{"input"}),
		paceInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dtfleet_worker_pacing_in_flight",
			Help: "Requests this worker process has in flight to the input's appliance (including those waiting for requests_per_second).",
		}, []string{"input"}),
		paceFloor: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dtfleet_worker_pacing_latency_floor_seconds",
			Help: "The least latency (to the response headers) this worker process saw from the input's appliance in the last 5 to 10 minutes: the pacing's reference.",
		}, []string{"input"}),
		paceDecreases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_worker_pacing_decreases_total",
			Help: "Times the adaptive limit shrank, by reason: latency (over twice the floor), throttled (429), server_error (5xx), no_answer.",
		}, []string{"input", "reason"}),
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.slots, m.events, m.dropped, m.paceLimit, m.paceInFlight, m.paceFloor, m.paceDecreases} {
		if err := reg.Register(c); err != nil {
			// Leave reg as it was, so the caller may retry with another registerer.
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("registering the worker's metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}
