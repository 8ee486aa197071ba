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
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.slots, m.events, m.dropped} {
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
