package main

import (
	"github.com/spf13/cobra"
)

// addMetricsFlag registers --metrics-listen on a command that runs fleet roles.
func addMetricsFlag(cmd *cobra.Command, o *fleetOptions) {
	cmd.Flags().StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9464 (/metrics)")
}

func newRunCmd(g *globalFlags) *cobra.Command {
	var (
		cf *configFlags
		o  fleetOptions
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the whole fleet in one process (embedded NATS unless nats.url is set)",
		Long: `run starts every role — coordinator, workers and shipper — in one process. With no nats.url
it starts an embedded NATS server with JetStream on nats.store_dir, listening on nats.listen so that
more workers (dtfleet worker) or a status query (dtfleet status) can join from this host.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := cf.load()
			if err != nil {
				return err
			}
			return runFleet(cmd.Context(), cfg, allRoles, o, logger)
		},
	}
	cf = addConfigFlags(cmd)
	addMetricsFlag(cmd, &o)
	return cmd
}

// newRoleCmd builds the single-role commands: coordinator, worker, shipper.
func newRoleCmd(g *globalFlags, name, short string, r roles) *cobra.Command {
	var (
		cf *configFlags
		o  fleetOptions
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
			return runFleet(cmd.Context(), cfg, r, o, logger.With("process", name))
		},
	}
	cf = addConfigFlags(cmd)
	addMetricsFlag(cmd, &o)
	return cmd
}

func newCoordinatorCmd(g *globalFlags) *cobra.Command {
	return newRoleCmd(g, "coordinator", "Run the coordinator role against nats.url (standby while another leads)", roles{coordinator: true})
}

func newWorkerCmd(g *globalFlags) *cobra.Command {
	return newRoleCmd(g, "worker", "Run a worker against nats.url (any number, any host)", roles{worker: true})
}

func newShipperCmd(g *globalFlags) *cobra.Command {
	return newRoleCmd(g, "shipper", "Run the shipper role against nats.url (standby per lane while another delivers)", roles{shipper: true})
}
