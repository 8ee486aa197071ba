package shipper

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are this process's shipper metrics. The fleet-wide lane figures come from the
// checkpoints (cmd/dtfleet's collector); these count what this process did.
type metrics struct {
	batches *prometheus.CounterVec // output
	events  *prometheus.CounterVec // input, service
	dups    *prometheus.CounterVec // input, service
	leader  *prometheus.GaugeVec   // role, lane
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_shipper_batches_confirmed_total",
			Help: "Batches this process delivered and the output confirmed.",
		}, []string{"output"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_shipper_events_sent_total",
			Help: "Events this process delivered to every output (duplicates dropped excluded).",
		}, []string{"input", "service"}),
		dups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_shipper_duplicates_dropped_total",
			Help: "Events this process dropped because their key was delivered before.",
		}, []string{"input", "service"}),
		leader: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dtfleet_role_leader",
			Help: "1 while this process leads the role for the lane.",
		}, []string{"role", "lane"}),
	}
	var err error
	if m.batches, err = register(reg, m.batches); err != nil {
		return nil, err
	}
	if m.events, err = register(reg, m.events); err != nil {
		return nil, err
	}
	if m.dups, err = register(reg, m.dups); err != nil {
		return nil, err
	}
	if m.leader, err = register(reg, m.leader); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c on reg, or returns the identical collector registered before (a second
// shipper, or another role exporting dtfleet_role_leader, in the same process), so sharing a
// registry is not a collision.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("registering shipper metrics: %w", err)
	}
	return c, nil
}
