package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/bench"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/demo"
)

func newDemoCmd(g *globalFlags) *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Backfill a week from a fake Darktrace appliance into Devo lines, with no config and no Darktrace",
		Long:  help("demo"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Root().PersistentFlags().Changed("log-level") {
				g.logLevel = "warn" // the progress bar and the summary tell the story
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			sum, err := demo.Run(cmd.Context(), o, logger, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if sum.Missing > 0 || sum.Duplicates > 0 {
				return &exitError{code: 2, err: fmt.Errorf("demo finished with %d missing and %d duplicated events", sum.Missing, sum.Duplicates)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Dir, "dir", "dtfleet-demo", "working directory for the config, the NATS store and the output")
	cmd.Flags().IntVar(&o.Days, "days", 7, "days of appliance data to backfill")
	cmd.Flags().StringVar(&o.Output, "output", "file", "where Devo lines go: file or devo-tls")
	cmd.Flags().DurationVar(&o.Latency, "latency", 20*time.Millisecond, "fake appliance response latency")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 10*time.Minute, "give up if not caught up by then")
	cmd.Flags().BoolVar(&o.Quiet, "quiet", false, "no progress bar")
	return cmd
}

func newBenchCmd(g *globalFlags) *cobra.Command {
	var (
		o         bench.Options
		scenarios string
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the fleet in-process against the fake appliance and the fake Devo over TLS",
		Long:  help("bench"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Root().PersistentFlags().Changed("log-level") {
				g.logLevel = "error"
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			if o.Scenarios, err = bench.ParseScenarios(scenarios); err != nil {
				return fmt.Errorf("--scenarios: %w", err)
			}
			rep, err := bench.Run(cmd.Context(), o, logger, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			rep.Table(cmd.OutOrStdout())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&scenarios, "scenarios", "backfill,throughput,freshness,memory,scale", "comma-separated scenarios to run: "+strings.Join(bench.Scenarios, ", ")+", or all")
	f.StringVar(&o.Dir, "dir", "", "parent of the temporary directories (NATS stores, certificates); default the system's")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the whole bench to this file")
	f.StringVar(&o.MemProfile, "memprofile", "", "write a heap profile to this file at each run's peak heap (the run's name is appended)")
	f.DurationVar(&o.Timeout, "timeout", 15*time.Minute, "give up a run that has not finished by then")

	f.IntVar(&o.Slots, "slots", 500, "backfill: slots (time windows) to backfill")
	f.IntVar(&o.EventsPerSlot, "events-per-slot", 5, "backfill: mean events per slot")
	f.DurationVar(&o.Latency, "latency", 20*time.Millisecond, "backfill: appliance response latency")
	f.DurationVar(&o.Jitter, "jitter", -1, "appliance latency jitter (uniform ±); default a tenth of the latency")
	f.IntVar(&o.Concurrency, "concurrency", 0, "backfill, throughput, memory, freshness: fixed requests in flight per worker process (default: the adaptive pacing up to workers.concurrency's default, as a user gets it)")
	f.IntVar(&o.BaselineSlots, "baseline-slots", 100, "backfill: slots the sequential baseline runs on (0: all; fewer are extrapolated)")
	f.IntVar(&o.Workers, "workers", 1, "worker processes (N-1 extra 'dtfleet worker' processes of this binary) for backfill, throughput, memory, freshness")
	f.Float64Var(&o.RPS, "rps", 2000, "requests_per_second of the input (fleet-wide limit)")
	f.DurationVar(&o.Window, "window", time.Hour, "slot window (override_time_window_interval_in_minutes)")
	f.DurationVar(&o.LookBack, "look-back", 0, "modelbreaches look-back of backfill runs (freshness always uses the default 60m)")

	f.IntVar(&o.EventSize, "event-size", 2048, "throughput, memory: approximate bytes per event")
	f.IntVar(&o.TPSlots, "throughput-slots", 100, "throughput: slots (100 × 5,000 events of 2 KB: a backfill of 500k events, long enough that filling the pipeline is a small part of it)")
	f.IntVar(&o.TPEventsPerSlot, "throughput-events-per-slot", 5000, "throughput, memory: mean events per slot")
	f.DurationVar(&o.TPLatency, "throughput-latency", 0, "throughput, memory: appliance latency")
	f.IntVar(&o.MemoryMB, "memory-mb", 512, "memory: MB of event JSON to backfill")
	f.IntVar(&o.BacklogMB, "max-backlog-mb", config.DefaultMaxBacklogInMB, "every run: coordinator.max_backlog_in_mb (results planned but not delivered, per lane)")

	f.DurationVar(&o.LiveDuration, "live-duration", 30*time.Second, "freshness: how long events are measured")
	f.DurationVar(&o.Period, "period", 5*time.Second, "freshness: request_period_in_seconds")
	f.Float64Var(&o.LiveEventsPerHour, "live-events-per-hour", 3600, "freshness: events per hour the live appliance produces")

	f.IntVar(&o.ScaleSlots, "scale-slots", 1000, "scale: slots of each run")
	f.DurationVar(&o.ScaleLatency, "scale-latency", 100*time.Millisecond, "scale: appliance latency")
	f.IntVar(&o.ScaleConcurrency, "scale-concurrency", 8, "scale: requests in flight per worker process")
	f.IntVar(&o.Pacing.Slots, "pacing-slots", 1000, "pacing: slots of each run")
	f.DurationVar(&o.Pacing.Latency, "pacing-latency", 200*time.Millisecond, "pacing: the appliance's latency with one request in flight")
	f.DurationVar(&o.Pacing.LatencyPerInFlight, "pacing-latency-per-inflight", 5*time.Millisecond, "pacing: added latency per other request in flight (5ms doubles 200ms at 41 in flight)")
	f.IntVar(&o.Pacing.RateLimitAbove, "pacing-rate-limit-above", 40, "pacing: the appliance answers 429 beyond this many requests in flight (40: where its latency has doubled)")
	f.IntSliceVar(&o.Pacing.Sweep, "pacing-sweep", []int{8, 16, 24, 32, 40, 48}, "pacing: fixed concurrencies compared with the adaptive pacing")
	f.Float64Var(&o.RateCheckRPS, "rate-check-rps", 20, "scale: requests_per_second of the fleet-wide limit check (0 skips it)")
	return cmd
}
