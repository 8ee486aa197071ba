// Package metrics exports a fleet's state as Prometheus metrics and serves them over HTTP. The
// Collector reads the state through internal/status at scrape time; the Server serves whatever
// Gatherer it is given. Nothing here touches Prometheus's global registry: callers register the
// Collector on their own Registerer.
//
// It may import internal/config and internal/status; it must not import the roles or the fleet
// assembly (internal/fleet imports it).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/status"
)

// Collector exports the fleet's state, as `dtfleet status` reads it from the bus, as
// Prometheus metrics. It reads the checkpoints at scrape time, so every process of a fleet
// exports the same, fleet-wide figures, whichever roles it runs; a scrape that cannot read them
// fails instead of exporting stale values.
type Collector struct {
	// ApplianceOffset, when set, says how far an input's appliance clock is ahead of the local
	// one (ok false: not known yet). Lag is measured on the appliance's clock when it is known,
	// since the windows are the appliance's times; nil uses the local clock.
	ApplianceOffset func(input string) (offset time.Duration, ok bool)

	src status.KVSource
	cfg *config.Config
	now func() time.Time

	planned, delivered, backlog, lag, pending    *prometheus.Desc
	events, dups, failedPassed, failedOpen, work *prometheus.Desc
	leader, up                                   *prometheus.Desc
}

// NewCollector returns a collector of the state of cfg's fleet, read from src with the clock now
// (lag is measured against it).
func NewCollector(src status.KVSource, cfg *config.Config, now func() time.Time) *Collector {
	lane := []string{"input", "service"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("dtfleet_"+name, help, labels, nil)
	}
	return &Collector{
		src: src, cfg: cfg, now: now,
		planned:      d("lane_planned_slots", "Sequence number of the last slot the coordinator planned.", lane...),
		delivered:    d("lane_delivered_slots", "Sequence number of the last slot the shipper delivered.", lane...),
		backlog:      d("lane_backlog_slots", "Slots planned but not yet delivered.", lane...),
		pending:      d("lane_pending_publish_slots", "Slots reserved by the coordinator and not yet confirmed published.", lane...),
		lag:          d("lane_lag_seconds", "Time between now on the appliance's clock and the end of the last delivered window (or period); never negative.", lane...),
		events:       d("lane_events_delivered_total", "Events delivered to every output.", lane...),
		dups:         d("lane_duplicates_dropped_total", "Events dropped because their key was already delivered.", lane...),
		failedPassed: d("lane_failed_slots_passed_total", "Slots that failed for good and were passed over.", lane...),
		failedOpen:   d("lane_failed_slots", "Failure records awaiting a replay.", lane...),
		work:         d("workers", "Worker processes with a live heartbeat."),
		leader:       d("leader", "1 for the holder of each lease.", "lease", "holder"),
		up:           d("bus_up", "1 when the fleet's state could be read from NATS at this scrape."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.planned, c.delivered, c.backlog, c.pending, c.lag, c.events, c.dups,
		c.failedPassed, c.failedOpen, c.work, c.leader, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := status.Read(ctx, c.src, c.cfg, c.now())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		ch <- prometheus.NewInvalidMetric(c.up, fmt.Errorf("reading the fleet's state: %w", err))
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	open := map[[2]string]int{}
	for _, f := range st.Failed {
		open[[2]string{f.Input, f.Service}]++
	}
	for _, l := range st.Lanes {
		lv := []string{l.Input, l.Service}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
		}
		gauge(c.planned, float64(l.PlannedSeq))
		gauge(c.delivered, float64(l.DeliveredSeq))
		gauge(c.backlog, float64(l.Backlog))
		gauge(c.pending, float64(l.Pending))
		if !l.DeliveredUntil.IsZero() {
			gauge(c.lag, c.lagOf(l.Input, st.Now, l.DeliveredUntil).Seconds())
		}
		counter(c.events, l.Events)
		counter(c.dups, l.Duplicates)
		counter(c.failedPassed, l.FailedPassed)
		gauge(c.failedOpen, float64(open[[2]string{l.Input, l.Service}]))
		if l.Shipper != "" {
			ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, 1, "shipper."+l.Input+"."+l.Service, l.Shipper)
		}
	}
	if st.Coordinator != "" {
		ch <- prometheus.MustNewConstMetric(c.leader, prometheus.GaugeValue, 1, "coordinator", st.Coordinator)
	}
	ch <- prometheus.MustNewConstMetric(c.work, prometheus.GaugeValue, float64(len(st.Workers)))
}

// lagOf is how far behind the appliance's now (now shifted by its clock offset, when known) the
// delivered time until is. It is never negative: a snapshot lane's delivered period ends after
// its poll time, and a window cannot be delivered before it ends; either is no lag.
func (c *Collector) lagOf(input string, now, until time.Time) time.Duration {
	if c.ApplianceOffset != nil {
		if off, ok := c.ApplianceOffset(input); ok {
			now = now.Add(off)
		}
	}
	return max(now.Sub(until), 0)
}

// NewRegistry returns a registry of its own (not the global one) holding this process's Go
// runtime and process metrics, the base every served registry starts from.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server serves the metrics of Gatherer on /metrics at Addr, and the process's health: /healthz
// answers 200 while the process serves at all (liveness), /readyz answers 200 when Readiness
// returns nil and 503 with its error otherwise (readiness).
type Server struct {
	Addr     string
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
	// Readiness says whether the process can do its roles' work: nil when ready, or why not. It
	// is called on every /readyz request and must be quick and safe for concurrent use; nil
	// means always ready. Its error text is served, so it must name no secret.
	Readiness func() error
	// Ready, when set, receives the bound address once the listener is open (tests, ":0").
	Ready func(addr string)
}

// Run serves until ctx ends, then shuts the server down and returns once it stopped. It fails
// at once when Addr cannot be listened on.
func (m *Server) Run(ctx context.Context) error {
	logger := m.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", m.Addr)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", m.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if m.Readiness != nil {
			if err := m.Readiness(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, "not ready: "+err.Error()+"\n")
				return
			}
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	logger.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	if m.Ready != nil {
		m.Ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("stopping the metrics server: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metrics: %w", err)
	}
	return nil
}

// BlockedBound is how long a lane of this process may stay stuck before /readyz fails: a shipper
// lane retrying one delivery, or a worker failing to fetch from its work consumer, for longer
// than this. It is well above a normal Devo reconnect and a NATS leader election, so a short
// outage does not take a process out of its Service.
const BlockedBound = 2 * time.Minute

// Blocker is a role that can be stuck. Blocked returns nil unless the role has been unable to
// make progress for longer than bound, and then an error that says what is stuck (it is served
// on /readyz, so it must name no secret). It must be quick and safe for concurrent use.
type Blocker interface {
	Blocked(bound time.Duration) error
}

// LanesReady returns nil when none of blockers is blocked for longer than bound, or their errors
// joined. A standby shipper lane does no work and is never blocked, so standby replicas stay
// ready.
func LanesReady(bound time.Duration, blockers ...Blocker) error {
	var errs []error
	for _, b := range blockers {
		if err := b.Blocked(bound); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
