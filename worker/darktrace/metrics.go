package darktrace

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics observes a process's requests to its appliances: their durations by input, endpoint
// and status class, the failures a caller retries by kind, and each appliance's clock (its Date
// header) for the fleet's lag. One Metrics serves every Client of a process (Config.Input tells
// them apart). It is a prometheus.Collector the caller registers on its own Registerer, or not
// at all. Its methods are safe for concurrent use; a nil *Metrics records nothing.
type Metrics struct {
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec

	mu     sync.Mutex
	offset map[string]time.Duration // input → appliance clock minus local clock, at the last response
}

// NewMetrics returns the Darktrace request metrics, zero and unregistered.
func NewMetrics() *Metrics {
	return &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dtfleet_darktrace_request_duration_seconds",
			Help: "Duration of requests to the appliance, from sending to the end of the body, by status class (2xx, 4xx, 5xx, or error without a response).",
			// Small status calls to large backfill windows of model breaches.
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 11),
		}, []string{"input", "endpoint", "code_class"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dtfleet_darktrace_retries_total",
			Help: "Failed requests the caller may retry (not Terminal, not a cancellation), by the kind of failure.",
		}, []string{"input", "class"}),
		offset: map[string]time.Duration{},
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.duration.Describe(ch)
	m.retries.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.duration.Collect(ch)
	m.retries.Collect(ch)
}

// ApplianceOffset returns how far input's appliance clock was ahead of the local clock (negative:
// behind) at its last response with a Date header, and whether there was one. Date has a
// resolution of one second.
func (m *Metrics) ApplianceOffset(input string) (time.Duration, bool) {
	if m == nil {
		return 0, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.offset[input]
	return d, ok
}

// observe records one request of input to endpoint that took took and ended with resp (nil when
// no response came) and err.
func (m *Metrics) observe(input, endpoint string, resp *http.Response, err error, took time.Duration, now time.Time) {
	if m == nil {
		return
	}
	class := "error"
	if resp != nil {
		class = strconv.Itoa(resp.StatusCode/100) + "xx"
		if t, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
			m.mu.Lock()
			m.offset[input] = t.Sub(now)
			m.mu.Unlock()
		}
	}
	m.duration.WithLabelValues(input, endpoint, class).Observe(took.Seconds())
	var e *Error
	if errors.As(err, &e) && e.Class != Terminal && e.Kind != KindCanceled {
		m.retries.WithLabelValues(input, e.Kind.String()).Inc()
	}
}
