package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/buildinfo"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/metrics"
	"github.com/dtfleet/dtfleet/internal/ops"
)

func newRunCmd(g *globalFlags) *cobra.Command {
	cmd := newRoleCmd(g, "run", "Run the whole fleet in one process (embedded NATS unless nats.url is set)", fleet.AllRoles)
	cmd.Long = help("run")
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
			clock, offset, err := debugClock(os.Getenv)
			if err != nil {
				return err
			}
			if clock != nil {
				logger.Warn("test knob: this process's clock is shifted from the host's", "env", debugClockEnv, "offset", offset.String())
			}
			reg := metrics.NewRegistry()
			f := fleet.Fleet{Config: cfg, Roles: r, Deps: fleet.Dependencies{Logger: logger, Registerer: reg, Gatherer: reg, Clock: clock},
				Overrides: fleet.Overrides{MetricsListen: metricsListen}}
			// A backfill shows its progress: a bar on a terminal, plain lines or JSON records otherwise.
			return ops.RunFleet(cmd.Context(), &f, g.show(cmd, logger))
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
		cf *configFlags
		o  ops.StatusOptions
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show per input and service: planned and delivered cursors, lag, backlog, failed slots, leaders, workers",
		Long:  help("status"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOps(cmd, g, cf, func(e ops.Env) error {
				code, err := ops.Status(cmd.Context(), e, o)
				if code != 0 {
					return &exitError{code: code, err: cmp.Or(err, errors.New(""))}
				}
				return err
			})
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&o.Check, "check", false, "exit 0 healthy, 1 lagging, 2 failed slots, 3 unreachable")
	cmd.Flags().DurationVar(&o.MaxLag, "max-lag", time.Hour, "with --check, a lane delivered less recently than this is lagging")
	return cmd
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
