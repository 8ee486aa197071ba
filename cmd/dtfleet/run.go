package main

import (
	"encoding/json"
	"time"

	"github.com/spf13/cobra"

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
		cf     *configFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show per input and service: planned and delivered cursors, lag, backlog, failed slots, leaders, workers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBus(cmd, g, cf, func(cfg *config.Config, b *bus.Bus) error {
				st, err := status.Read(cmd.Context(), b, cfg, time.Now())
				if err != nil {
					return err
				}
				if asJSON {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(st)
				}
				status.Print(cmd.OutOrStdout(), st)
				return nil
			})
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
