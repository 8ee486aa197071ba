package devo

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what a process's outputs sent to Devo. One Metrics serves every output of a
// process (the output label tells them apart). It is a prometheus.Collector: the caller registers
// it on its own Registerer, or not at all (it still counts, unseen). Its methods are safe for
// concurrent use, and a nil *Metrics records nothing.
type Metrics struct {
	lines, bytes, batches, reconnects *prometheus.CounterVec
	confirm                           *prometheus.HistogramVec
}

// NewMetrics returns the Devo output metrics, zero and unregistered.
func NewMetrics() *Metrics {
	out := []string{"output"}
	return &Metrics{
		lines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_devo_lines_sent_total",
			Help: "Lines (events) this process delivered to the output, counted once the output confirmed their batch.",
		}, out),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_devo_bytes_sent_total",
			Help: "Bytes of event messages (the JSON of each line, before syslog framing or compression) in confirmed batches.",
		}, out),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_devo_batches_confirmed_total",
			Help: "Batches the output confirmed (Devo's EOF after the half-close, a 2xx, an fsync).",
		}, out),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_devo_reconnects_total",
			Help: "Deliveries attempted again after a failed one (each attempt opens a new connection).",
		}, out),
		confirm: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dtfleet_devo_confirm_duration_seconds",
			Help:    "Time from the start of a batch's delivery to its confirmation by the output.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10), // 5 ms to about 19 s
		}, out),
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.lines, m.bytes, m.batches, m.reconnects, m.confirm}
}

// confirmed records a batch of b the output confirmed after took.
func (m *Metrics) confirmed(output string, b *Batch, took time.Duration) {
	if m == nil {
		return
	}
	var n int
	for i := range b.Events {
		n += len(b.Events[i].Msg)
	}
	m.lines.WithLabelValues(output).Add(float64(len(b.Events)))
	m.bytes.WithLabelValues(output).Add(float64(n))
	m.batches.WithLabelValues(output).Inc()
	m.confirm.WithLabelValues(output).Observe(took.Seconds())
}

// reconnect records a delivery attempted again after a failure.
func (m *Metrics) reconnect(output string) {
	if m == nil {
		return
	}
	m.reconnects.WithLabelValues(output).Inc()
}

// touch creates output's series at zero, so a dashboard shows an idle output rather than none.
func (m *Metrics) touch(output string) {
	if m == nil {
		return
	}
	for _, v := range []*prometheus.CounterVec{m.lines, m.bytes, m.batches, m.reconnects} {
		v.WithLabelValues(output)
	}
}
