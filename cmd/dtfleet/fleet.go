package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/worker"
)

// roles says which fleet roles a process runs.
type roles struct{ coordinator, worker, shipper bool }

var allRoles = roles{true, true, true}

// fleetOptions are the knobs of runFleet beyond the config file (tests, demo, bench).
type fleetOptions struct {
	listen      string                // embedded server listener override
	onBus       func(b *bus.Bus)      // called once the bus is provisioned
	onDelivered func(proto.Done, int) // shipper hook
	fetchers    map[string]worker.Fetcher
	outputs     []devo.Output // replaces the configured outputs
	tick        time.Duration
	ackWait     time.Duration
	skipCheck   bool
	id          string
	stdout      io.Writer              // console outputs' writer (default os.Stdout)
	backoff     func() backoff.BackOff // shipper retry pacing (default devo.NewBackoff)
	batchEvents int                    // shipper batch cap in events (default the shipper's)
	// metricsListen, when set, serves Prometheus metrics on this address (--metrics-listen).
	metricsListen string
	onMetrics     func(addr string) // called with the metrics listener's address
}

// connectBus connects to the configured bus. Role commands (coordinator, worker, shipper) with no
// nats.url join the embedded server of a `dtfleet run` on this host through its listener.
func connectBus(ctx context.Context, cfg *config.Config, r roles, o fleetOptions, logger *slog.Logger) (*bus.Bus, error) {
	nc := cfg.NATS
	if nc.URL == "" && r != allRoles {
		if nc.Listen == "none" {
			return nil, errors.New("a single role needs nats.url, or the embedded server's nats.listen of a running `dtfleet run`")
		}
		listen := nc.Listen
		if listen == "" {
			listen = "127.0.0.1:4222"
		}
		nc.URL = "nats://" + listen
	}
	b, err := bus.Connect(ctx, nc, bus.Options{Name: "dtfleet", Logger: logger, ListenOverride: o.listen})
	if err != nil {
		return nil, err
	}
	if err := b.Provision(ctx, bus.SettingsFor(cfg)); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
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

// buildOutputs opens every enabled output. An output that cannot be opened (a certificate that
// does not match its key, say) stops the process before anything moves.
func buildOutputs(cfg *config.Config, stdout io.Writer, logger *slog.Logger) ([]devo.Output, error) {
	var outs []devo.Output
	for _, name := range cfg.EnabledOutputs() {
		o, err := devo.NewOutput(name, cfg.Outputs[name], devo.Options{
			Logger:      logger,
			Stdout:      stdout,
			StatsPeriod: time.Duration(cfg.Shipper.SenderStatsPeriodInSeconds) * time.Second,
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

// runFleet runs the given roles until ctx ends, then shuts them down in order (workers drain
// their in-flight slots, the shipper stops after its current batch) and closes the bus.
func runFleet(ctx context.Context, cfg *config.Config, r roles, o fleetOptions, logger *slog.Logger) error {
	// The outputs are opened first: a bad certificate, key or chain file stops the process with
	// an error naming it before any role starts, so nothing is planned, fetched or delivered.
	outs := o.outputs
	if r.shipper && outs == nil {
		var err error
		if outs, err = buildOutputs(cfg, o.stdout, logger); err != nil {
			return err
		}
		defer func() {
			for _, o := range outs {
				_ = o.Close()
			}
		}()
	}
	b, err := connectBus(ctx, cfg, r, o, logger)
	if err != nil {
		return err
	}
	defer b.Close()
	if b.Embedded() {
		logger.Info("embedded NATS ready", "client_url", b.ClientURL)
	}
	if o.onBus != nil {
		o.onBus(b)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	// fail stops the roles already started and waits for them before the bus closes.
	fail := func(err error) error {
		cancel()
		_ = g.Wait()
		return err
	}
	// reg gets the roles' own metrics next to the fleet's; nil (no metrics listener) registers none.
	var reg prometheus.Registerer
	if o.metricsListen != "" {
		m := newMetricsServer(o.metricsListen, b, cfg, logger)
		m.ready = o.onMetrics
		reg = m.reg
		g.Go(func() error { return m.Run(gctx) })
	}
	if r.worker {
		ep, err := workerEndpoints(gctx, b)
		if err != nil {
			return fail(err)
		}
		w, err := worker.New(ep, cfg, worker.Options{Logger: logger, Fetchers: o.fetchers, AckWait: o.ackWait, ID: o.id, Registerer: reg})
		if err != nil {
			return fail(err)
		}
		if !o.skipCheck {
			if err := w.CheckInputs(gctx); err != nil {
				return fail(err)
			}
		}
		g.Go(func() error { return w.Run(gctx) })
	}
	if r.shipper {
		for _, out := range outs {
			if rn, ok := out.(devo.Runner); ok {
				g.Go(func() error { return rn.Run(gctx) })
			}
		}
		sb, err := shipper.JetStreamBus(gctx, b.JS)
		if err != nil {
			return fail(err)
		}
		s, err := shipper.New(sb, cfg, shipper.Options{Logger: logger, Outputs: outs, OnDelivered: o.onDelivered, ID: o.id,
			Backoff: o.backoff, BatchEvents: o.batchEvents, Registerer: reg})
		if err != nil {
			return fail(err)
		}
		g.Go(func() error { return s.Run(gctx) })
	}
	if r.coordinator {
		c, err := coordinator.New(gctx, b, b.JS, cfg, coordinator.Options{Logger: logger, Tick: o.tick, ID: o.id, Registerer: reg})
		if err != nil {
			return fail(err)
		}
		g.Go(func() error { return c.Run(gctx) })
	}
	return g.Wait()
}

// connectClient connects a short-lived command (replay, status) to the bus: nats.url when set;
// otherwise the embedded server of a running `dtfleet run` through its listener, or, when none is
// running, the embedded store itself (without a listener).
func connectClient(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*bus.Bus, error) {
	if cfg.NATS.URL != "" || cfg.NATS.Listen == "none" {
		return connectBus(ctx, cfg, allRoles, fleetOptions{listen: "none"}, logger)
	}
	b, err := connectBus(ctx, cfg, roles{}, fleetOptions{}, logger)
	if err == nil {
		return b, nil
	}
	logger.Debug("no running fleet on the embedded listener; opening the store directly", "err", err)
	return connectBus(ctx, cfg, allRoles, fleetOptions{listen: "none"}, logger)
}
