package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/simulate"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

func newSimulateCmd(g *globalFlags) *cobra.Command {
	f := &simulate.Appliance{}
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Run a fake Darktrace appliance with generated data, for trials and load tests",
		Long:  help("simulate"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			opts, err := f.Options()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := f.ServeAppliance(cmd.Context(), opts, logger, cmd.OutOrStdout()); err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.Listen, "listen", "127.0.0.1:0", "listen address (port 0 picks a free port)")
	fl.BoolVar(&f.TLS, "tls", false, "serve HTTPS with a new self-signed certificate")
	fl.StringVar(&f.PublicToken, "public-token", darktracetest.DefaultPublicToken, "public token the fake accepts")
	fl.StringVar(&f.PrivateToken, "private-token", darktracetest.DefaultPrivateToken, "private token the fake accepts (a test token)")
	fl.IntVar(&f.Days, "days", 7, "days of history before now")
	fl.Int64Var(&f.Seed, "seed", 1, "dataset seed (same seed, same data)")
	fl.StringArrayVar(&f.EventsPerHour, "events-per-hour", nil, "service=N mean events per hour, repeatable (modelbreaches, aianalyst_incidentevents, antigena)")
	fl.IntVar(&f.EventSize, "event-size", 0, "approximate bytes per model breach (0: the sample's size, about 6 KB)")
	fl.DurationVar(&f.Latency, "latency", 0, "added response latency")
	fl.DurationVar(&f.Jitter, "jitter", 0, "latency jitter (uniform ±)")
	fl.DurationVar(&f.LatencyPerInFlight, "latency-per-inflight", 0, "added latency per other request in flight (an appliance that slows down under load)")
	fl.IntVar(&f.RateLimitAbove, "rate-limit-above", 0, "answer 429 to requests beyond this many in flight (0: never)")
	fl.Float64Var(&f.FaultRate, "fault-rate", 0, "probability in [0, 1] that a request gets a random fault")
	fl.StringSliceVar(&f.FaultKinds, "fault-kinds", nil, "kinds random faults are drawn from (default status,rate_limit,stall,reset,truncate)")
	fl.StringArrayVar(&f.Faults, "fault", nil, "scripted fault SPEC, repeatable (see above)")
	fl.DurationVar(&f.Span, "span", 0, "history before now as a duration, e.g. 36h (overrides --days)")
	fl.BoolVar(&f.Realistic, "realistic", false, "turn on all the untidiness below at realistic values (explicit flags override)")
	fl.Float64Var(&f.LateBreaches, "late-breaches", 0, "share in [0, 1] of breaches created up to --max-breach-delay after their time")
	fl.DurationVar(&f.MaxBreachDelay, "max-breach-delay", 3*time.Hour, "how late a late breach may be created")
	fl.DurationVar(&f.IncidentDelay, "incident-delay", 0, "AI Analyst events become visible up to this long after createdAt")
	fl.StringVar(&f.IncidentWindow, "incident-window", "event", "what the AI Analyst window filters on: event (createdAt) or change (visibility)")
	fl.BoolVar(&f.ActionLifecycle, "action-lifecycle", false, "Antigena actions are extended, cleared and expire over time, each change with its updated time")
	fl.StringVar(&f.ActionWindow, "action-window", "event", "what the Antigena window filters on: event (start) or change (updated)")
	fl.DurationVar(&f.ClockOffset, "clock-offset", 0, "the appliance clock's offset from this host's (e.g. 2m ahead, -40m behind)")
	return cmd
}
