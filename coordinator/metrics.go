package coordinator

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one coordinator process's own figures (the fleet-wide ones are read from NATS by
// the metrics server).
type metrics struct {
	leader  *prometheus.GaugeVec
	planned *prometheus.CounterVec
	paused  *prometheus.GaugeVec
	storage prometheus.Gauge
}

// newMetrics creates the coordinator's metrics and registers them with reg; a nil reg registers
// nothing (the metrics are still kept, unseen).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		// The shipper exports the same family (same name, help and labels) for its lanes: a
		// process running both shares one collector, found through AlreadyRegisteredError.
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dtfleet_role_leader",
			Help: "1 while this process leads the role for the lane.",
		}, []string{"role", "lane"}),
		planned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_coordinator_slots_planned_total",
			Help: "Slots this coordinator process planned and published (republished reservations not counted again).",
		}, []string{"input", "service"}),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dtfleet_coordinator_planning_paused",
			Help: "1 while this coordinator plans nothing new because the stream is nearly full (90% of its MaxBytes), or, for stream=\"jetstream_storage\", the JetStream storage the KV buckets share (90% of its room).",
		}, []string{"stream"}),
		storage: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dtfleet_coordinator_storage_used_ratio",
			Help: "Share of the JetStream storage room the KV buckets can use that is used (account or embedded server limit, minus the results stream's reservation), as the leading coordinator last read it; planning stops at 0.9.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.leader); err != nil {
		var are prometheus.AlreadyRegisteredError
		existing, ok := m.leader, false
		if errors.As(err, &are) {
			existing, ok = are.ExistingCollector.(*prometheus.GaugeVec)
		}
		if !ok {
			return nil, fmt.Errorf("registering the coordinator's metrics: %w", err)
		}
		m.leader = existing
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.planned, m.paused, m.storage} {
		if err := reg.Register(c); err != nil {
			// Leave reg as it was, so the caller may retry with another registerer.
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("registering the coordinator's metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}
