// Package fleet assembles a dtfleet process: it opens the outputs, connects the bus (embedded
// server or NATS cluster), provisions the streams and buckets, and runs the enabled roles
// (coordinator, worker, shipper) and the metrics server until its context ends. Start runs a
// fleet in the background and reads its progress, for the demo, the bench and the tests.
//
// It may import the roles, internal/bus, internal/config, internal/metrics and internal/status.
// Nothing but main packages, internal/demo, internal/bench, internal/ops and tests may import it.
package fleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/logging"
	"github.com/dtfleet/dtfleet/internal/metrics"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// Roles says which fleet roles a process runs.
type Roles struct{ Coordinator, Worker, Shipper bool }

// AllRoles is a whole fleet in one process (`dtfleet run`).
var AllRoles = Roles{Coordinator: true, Worker: true, Shipper: true}

// Dependencies are what the fleet uses without owning: the zero value of each is a working
// default.
type Dependencies struct {
	// Logger receives every role's logs (default: discarded).
	Logger *slog.Logger
	// Clock is the roles' clock (default the real clock).
	Clock clockwork.Clock
	// Registerer receives the fleet collector and the roles' own metrics when metrics are
	// served, and Gatherer is what the metrics server serves; both default to a registry of the
	// fleet's own (metrics.NewRegistry). With no metrics listener the roles register nothing.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Stdout is where console outputs write (default os.Stdout).
	Stdout io.Writer
	// Fetchers replaces the Darktrace clients per input name (nil: built from the config).
	Fetchers map[string]worker.Fetcher
	// Outputs replaces the configured outputs (nil: opened from the config, closed on return).
	Outputs []devo.Output
	// Getenv reads the environment the Go runtime read GOMEMLIMIT from (default os.Getenv).
	Getenv func(string) string
}

// Overrides change settings a process takes from its flags rather than the config file.
type Overrides struct {
	// Listen replaces nats.listen of the embedded server ("none": no listener, "127.0.0.1:0":
	// any free port).
	Listen string
	// ID names this process's roles in leases and heartbeats (default: random per role).
	ID string
	// Tick is how often the coordinator checks its lanes (default the coordinator's).
	Tick time.Duration
	// BatchEvents caps the shipper's batches in events (default the shipper's).
	BatchEvents int
	// Backoff makes the policy that paces the shipper's retries of a failed delivery, one per
	// lane (default devo.NewBackoff).
	Backoff func() backoff.BackOff
	// MetricsListen, when set, serves Prometheus metrics on this address (--metrics-listen).
	MetricsListen string
}

// Hooks let the demo, the bench and tests watch a fleet. Each is optional and must not block.
type Hooks struct {
	// OnBus is called once the bus is provisioned, before any role starts.
	OnBus func(b *bus.Bus)
	// OnDelivered is called after the shipper checkpointed each slot's delivery.
	OnDelivered func(d proto.Done, delivered int)
	// OnMetrics is called with the metrics listener's address once it is open.
	OnMetrics func(addr string)
}

// Fleet is one process's share of a fleet: Config's lanes, the Roles it runs.
type Fleet struct {
	Config    *config.Config
	Roles     Roles
	Deps      Dependencies
	Overrides Overrides
	Hooks     Hooks
}

// Run runs the roles until ctx ends, then shuts them down in order (workers drain their
// in-flight slots, the shipper stops after its current batch), closes the bus and the outputs it
// opened, and returns once every goroutine it started has exited. It returns the first role's
// error; a role stopped by ctx returns nil.
//
// Run first sets the process's soft memory limit from globals.memory_limit_in_mb, unless the
// GOMEMLIMIT environment variable set it, and puts back the limit it found when it returns.
func (f *Fleet) Run(ctx context.Context) error {
	logger := f.logger()
	// Before anything allocates: the embedded server's store and the workers' responses are
	// what the limit is for.
	getenv := f.Deps.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	defer setMemoryLimit(f.Config.Globals.MemoryLimitInMB, getenv, logger)()
	// The outputs are opened first: a bad certificate, key or chain file stops the process with
	// an error naming it before any role starts, so nothing is planned, fetched or delivered.
	outs := f.Deps.Outputs
	// The roles' own Darktrace and Devo metrics count from the start; metricsServer registers
	// them when metrics are served.
	dm, om := darktrace.NewMetrics(), devo.NewMetrics()
	if f.Roles.Shipper && outs == nil {
		var err error
		if outs, err = openOutputs(f.Config, f.Deps.Stdout, logger, om); err != nil {
			return err
		}
		defer func() {
			for _, o := range outs {
				_ = o.Close()
			}
		}()
	}
	b, err := Connect(ctx, f.Config, f.Roles, f.Overrides.Listen, logger)
	if err != nil {
		return err
	}
	defer b.Close()
	if b.Embedded() {
		logger.Info("embedded NATS ready", "client_url", b.ClientURL)
	}
	if f.Hooks.OnBus != nil {
		f.Hooks.OnBus(b)
	}
	g, gctx := errgroup.WithContext(ctx)
	var reg prometheus.Registerer  // the roles' metrics; nil (no metrics listener) registers none
	var started atomic.Bool        // the roles are built and running: half of readiness
	var blockers []metrics.Blocker // the roles that can be stuck; set before started
	if listen := f.metricsListen(); listen != "" {
		srv, r, unregister, err := f.metricsServer(b, listen, dm, om)
		if err != nil {
			return err
		}
		defer unregister()
		reg = r
		srv.Readiness = func() error { return readiness(b, started.Load(), blockers) }
		g.Go(func() error { return srv.Run(gctx) })
	}
	// The Devo collector's [GC] memory line, every 5 minutes on the real clock (a test's fake
	// clock would count its ticker among the waiters it expects).
	g.Go(func() error { return (&logging.GC{Logger: logger}).Run(gctx) })
	if blockers, err = f.startRoles(gctx, g, b, outs, reg, dm); err != nil {
		// Stop the roles already started and wait for them before the bus closes.
		_ = g.Wait()
	} else {
		started.Store(true)
		err = g.Wait()
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// A role that was still starting up (creating its consumer, say) when the stop came
		// reports the cancellation: that is the stop asked for, not a failure.
		return nil
	}
	return err
}

// startRoles builds the enabled roles and starts each in g, whose context ctx is. It is the one
// place the roles' constructors are called (port constructor changes here). On error it also
// hands the error to g, which cancels ctx so that the roles already started stop; the caller
// then waits for g. It returns the roles that can be stuck, for readiness.
func (f *Fleet) startRoles(ctx context.Context, g *errgroup.Group, b *bus.Bus, outs []devo.Output, reg prometheus.Registerer, dm *darktrace.Metrics) (blockers []metrics.Blocker, _ error) {
	logger, o, clock := f.logger(), f.Overrides, f.Deps.Clock
	fail := func(err error) ([]metrics.Blocker, error) {
		g.Go(func() error { return err }) // cancels ctx, so the roles started stop
		return nil, err
	}
	if f.Roles.Worker {
		ep, err := workerEndpoints(ctx, b)
		if err != nil {
			return fail(err)
		}
		w, err := worker.New(ep, f.Config, worker.Options{Logger: logger, Clock: clock, Fetchers: f.Deps.Fetchers, ID: o.ID, Registerer: reg, DarktraceMetrics: dm})
		if err != nil {
			return fail(err)
		}
		if err := checkInputs(ctx, w, clock, logger); err != nil {
			return fail(err)
		}
		blockers = append(blockers, w)
		g.Go(func() error { return w.Run(ctx) })
	}
	if f.Roles.Shipper {
		for _, out := range outs {
			if rn, ok := out.(devo.Runner); ok {
				g.Go(func() error { return rn.Run(ctx) })
			}
		}
		sb, err := shipper.JetStreamBus(ctx, b.JS)
		if err != nil {
			return fail(err)
		}
		s, err := shipper.New(sb, f.Config, shipper.Options{Logger: logger, Clock: clock, Outputs: outs,
			OnDelivered: f.Hooks.OnDelivered, ID: o.ID, BatchEvents: o.BatchEvents, Backoff: o.Backoff, Registerer: reg})
		if err != nil {
			return fail(err)
		}
		blockers = append(blockers, s)
		g.Go(func() error { return s.Run(ctx) })
	}
	if f.Roles.Coordinator {
		c, err := coordinator.New(ctx, b, b.JS, f.Config, coordinator.Options{Logger: logger, Clock: clock, Tick: o.Tick, ID: o.ID, Registerer: reg})
		if err != nil {
			return fail(err)
		}
		g.Go(func() error { return c.Run(ctx) })
	}
	return blockers, nil
}

// metricsListen is where this process serves its metrics: --metrics-listen, else metrics.listen,
// else "" (none).
func (f *Fleet) metricsListen() string {
	if f.Overrides.MetricsListen != "" {
		return f.Overrides.MetricsListen
	}
	return f.Config.Metrics.Listen
}

// readiness is /readyz's verdict: the process is connected to NATS, its roles started and none
// of its lanes is blocked for longer than metrics.BlockedBound. It does not ask for leadership:
// a standby coordinator or shipper is ready to take over, and taking it out of a Service would
// only hide it.
func readiness(b *bus.Bus, started bool, blockers []metrics.Blocker) error {
	if !b.NC.IsConnected() {
		return fmt.Errorf("not connected to NATS (%s)", b.NC.Status())
	}
	if !started {
		return errors.New("the roles have not started yet")
	}
	return metrics.LanesReady(metrics.BlockedBound, blockers...)
}

// metricsServer registers the fleet collectors (the fleet's state, the workers' consumer, the
// Darktrace requests dm and the Devo outputs om of this process) and returns the server on
// listen, the registerer the roles' metrics go to, and the collectors' unregistering.
func (f *Fleet) metricsServer(b *bus.Bus, listen string, dm *darktrace.Metrics, om *devo.Metrics) (*metrics.Server, prometheus.Registerer, func(), error) {
	reg, gat := f.Deps.Registerer, f.Deps.Gatherer
	if reg == nil || gat == nil {
		r := metrics.NewRegistry()
		reg, gat = r, r
	}
	now := time.Now
	if f.Deps.Clock != nil {
		now = f.Deps.Clock.Now
	}
	c := metrics.NewCollector(b, f.Config, now)
	c.ApplianceOffset = dm.ApplianceOffset
	cs := []prometheus.Collector{c, metrics.NewConsumerCollector(b.JS, [2]string{proto.StreamWork, proto.ConsumerWorkers}), dm, om}
	unregister := func() {
		for _, c := range cs {
			reg.Unregister(c)
		}
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			unregister()
			return nil, nil, nil, fmt.Errorf("registering the fleet metrics: %w", err)
		}
	}
	srv := &metrics.Server{Addr: listen, Gatherer: gat, Logger: f.logger(), Ready: f.Hooks.OnMetrics}
	return srv, reg, unregister, nil
}

func (f *Fleet) logger() *slog.Logger {
	if f.Deps.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Deps.Logger
}

// Connect connects to cfg's bus and provisions it. Processes running only some roles
// (coordinator, worker, shipper commands) with no nats.url join the embedded server of a
// `dtfleet run` on this host through its listener, with the credentials that server generated in
// nats.store_dir (bus.AuthFile): they must share its store directory and be able to read it. listen overrides nats.listen ("" keeps it).
func Connect(ctx context.Context, cfg *config.Config, r Roles, listen string, logger *slog.Logger) (*bus.Bus, error) {
	nc := cfg.NATS
	opts := bus.Options{Name: "dtfleet", Logger: logger, ListenOverride: listen}
	if nc.URL == "" && r != AllRoles {
		if nc.Listen == "none" {
			return nil, errors.New("a single role needs nats.url, or the embedded server's nats.listen of a running `dtfleet run`")
		}
		l := nc.Listen
		if l == "" {
			l = "127.0.0.1:4222"
		}
		nc.URL = "nats://" + l
		// The embedded server requires the credentials it generated in its store directory.
		opts.JoinStore = cmp.Or(nc.StoreDir, config.DefaultStoreDir)
	}
	b, err := bus.Connect(ctx, nc, opts)
	if err != nil {
		return nil, err
	}
	if err := b.Provision(ctx, bus.SettingsFor(cfg)); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// ConnectClient connects a short-lived command (replay, status, failed) to the bus: nats.url
// when set; otherwise the embedded server of a running `dtfleet run` through its listener, or,
// when none is running, the embedded store itself (without a listener). It never opens a store
// a running process holds (bus.LockFile): it refuses with a message that names the store and
// what to do instead.
func ConnectClient(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*bus.Bus, error) {
	if cfg.NATS.URL != "" {
		return Connect(ctx, cfg, AllRoles, "none", logger)
	}
	if cfg.NATS.Listen == config.ListenNone {
		b, err := Connect(ctx, cfg, AllRoles, "none", logger)
		var le *bus.StoreLockedError
		if errors.As(err, &le) {
			return nil, fmt.Errorf("%w; with nats.listen: none nothing else can reach it: stop that process first, or give it a listener (nats.listen: 127.0.0.1:4222) and run this command with the same configuration", err)
		}
		return b, err
	}
	b, err := Connect(ctx, cfg, Roles{}, "", logger)
	if err == nil {
		return b, nil
	}
	logger.Debug("no running fleet on the embedded listener; opening the store directly", "err", err)
	b, lerr := Connect(ctx, cfg, AllRoles, "none", logger)
	var le *bus.StoreLockedError
	if errors.As(lerr, &le) {
		return nil, fmt.Errorf("%w, and its listener (nats.listen %s) does not answer (%v): run this command with the configuration of the running process, or stop it first", lerr, cmp.Or(cfg.NATS.Listen, config.DefaultNATSListen), err)
	}
	return b, lerr
}

// workerEndpoints opens the parts of the bus a worker uses.
func workerEndpoints(ctx context.Context, b *bus.Bus) (worker.Endpoints, error) {
	ep := worker.Endpoints{Work: b, Results: b.JS, MaxPayload: b.MaxPayload()}
	var err error
	if ep.Failures, err = b.KV(ctx, proto.BucketFailed); err != nil {
		return ep, err
	}
	if ep.Heartbeats, err = b.KV(ctx, proto.BucketWorkers); err != nil {
		return ep, err
	}
	if ep.Rate, err = b.KV(ctx, proto.BucketRate); err != nil {
		return ep, err
	}
	return ep, nil
}

// OpenOutputs opens every enabled output of cfg. An output that cannot be opened (a certificate
// that does not match its key, say) closes the ones already open and fails.
func OpenOutputs(cfg *config.Config, stdout io.Writer, logger *slog.Logger) ([]devo.Output, error) {
	return openOutputs(cfg, stdout, logger, nil)
}

// openOutputs is OpenOutputs with the outputs counting into m (nil: not counted).
func openOutputs(cfg *config.Config, stdout io.Writer, logger *slog.Logger, m *devo.Metrics) ([]devo.Output, error) {
	var outs []devo.Output
	for _, name := range cfg.EnabledOutputs() {
		o, err := devo.NewOutput(name, cfg.Outputs[name], devo.Options{
			Logger:      logger,
			Stdout:      stdout,
			StatsPeriod: time.Duration(cfg.Shipper.SenderStatsPeriodInSeconds) * time.Second,
			Metrics:     m,
		})
		if err != nil {
			for _, o := range outs {
				_ = o.Close()
			}
			return nil, fmt.Errorf("opening output %s: %w", name, err)
		}
		outs = append(outs, o)
	}
	return outs, nil
}
