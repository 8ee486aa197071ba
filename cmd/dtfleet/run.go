package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/buildinfo"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/metrics"
	"github.com/dtfleet/dtfleet/internal/status"
)

func newRunCmd(g *globalFlags) *cobra.Command {
	cmd := newRoleCmd(g, "run", "Run the whole fleet in one process (embedded NATS unless nats.url is set)", fleet.AllRoles)
	cmd.Long = `run starts every role — coordinator, workers and shipper — in one process. With no nats.url
it starts an embedded NATS server with JetStream on nats.store_dir, listening on nats.listen so that
more workers (dtfleet worker) or a status query (dtfleet status) can join from this host.`
	return cmd
}

// newRoleCmd builds the commands that run fleet roles: run, coordinator, worker, shipper.
func newRoleCmd(g *globalFlags, name, short string, r fleet.Roles) *cobra.Command {
	var (
		cf            *configFlags
		metricsListen string
	)
	cmd := &cobra.Command{
		Use:   name,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := cf.load()
			if err != nil {
				return err
			}
			if r != fleet.AllRoles {
				logger = logger.With("process", name)
			}
			bi := buildinfo.Read()
			logger.Info(bi.StartupLine(), "version", bi.Version, "commit", bi.Commit, "os", bi.OS)
			reg := metrics.NewRegistry()
			f := fleet.Fleet{Config: cfg, Roles: r, Deps: fleet.Dependencies{Logger: logger, Registerer: reg, Gatherer: reg},
				Overrides: fleet.Overrides{MetricsListen: metricsListen}}
			return f.Run(cmd.Context())
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9464 (/metrics)")
	return cmd
}

// newRoleCmds builds the single-role commands: coordinator, worker, shipper.
func newRoleCmds(g *globalFlags) []*cobra.Command {
	return []*cobra.Command{
		newRoleCmd(g, "coordinator", "Run the coordinator role against nats.url (standby while another leads)", fleet.Roles{Coordinator: true}),
		newRoleCmd(g, "worker", "Run a worker against nats.url (any number, any host)", fleet.Roles{Worker: true}),
		newRoleCmd(g, "shipper", "Run the shipper role against nats.url (standby per lane while another delivers)", fleet.Roles{Shipper: true}),
	}
}

func newStatusCmd(g *globalFlags) *cobra.Command {
	var (
		cf            *configFlags
		asJSON, check bool
		maxLag        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show per input and service: planned and delivered cursors, lag, backlog, failed slots, leaders, workers",
		Long: `status reads the fleet's checkpoints, leases, failure records and heartbeats from NATS (or from
the embedded store when no dtfleet run holds it). It needs no Darktrace token: unset ${ENV}
variables in the configuration get a placeholder. With --check it prints one line per finding
and exits 0 healthy, 1 lagging (a lane more than --max-lag behind, or no coordinator leader),
2 failed slots awaiting a replay, 3 NATS or the store unreachable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := withBus(cmd, g, cf, func(cfg *config.Config, b *bus.Bus) error {
				st, err := status.Read(cmd.Context(), b, cfg, time.Now())
				switch {
				case err != nil:
					return &exitError{code: status.CheckUnreachable, err: err}
				case check:
					return checkExit(cmd, st, maxLag)
				case asJSON:
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(st)
				}
				status.Print(cmd.OutOrStdout(), st)
				return nil
			})
			var ee *exitError
			if check && err != nil && !errors.As(err, &ee) && fleet.ExitCode(err) != fleet.ExitConfig {
				return &exitError{code: status.CheckUnreachable, err: err}
			}
			return err
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&check, "check", false, "exit 0 healthy, 1 lagging, 2 failed slots, 3 unreachable")
	cmd.Flags().DurationVar(&maxLag, "max-lag", time.Hour, "with --check, a lane delivered less recently than this is lagging")
	return cmd
}

// checkExit prints status.Check's findings and returns its grade as the exit status.
func checkExit(cmd *cobra.Command, st *status.Status, maxLag time.Duration) error {
	code, reasons := status.Check(st, maxLag)
	for _, r := range reasons {
		fmt.Fprintln(cmd.OutOrStdout(), r)
	}
	if code == status.CheckHealthy {
		fmt.Fprintln(cmd.OutOrStdout(), "OK")
		return nil
	}
	return &exitError{code: code, err: errors.New("")}
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "version", Short: "Print the version, commit, build date, Go version and OS of this binary", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(buildinfo.Read())
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), buildinfo.Read())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
