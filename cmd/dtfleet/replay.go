package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/inspect"
)

func newReplayCmd(g *globalFlags) *cobra.Command {
	var (
		cf               *configFlags
		service, input   string
		fromFlag, toFlag string
		force            bool
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Re-fetch a time range of a service by republishing its slots",
		Long: `replay republishes the slots covering [--from, --to) of one service as new work at the end of
the lane, so they are fetched again and delivered in order. Events already delivered are dropped
by dedupe unless --force is given; a replay that delivers a failed slot's window clears its
failure record. Times are RFC 3339 (2024-05-01T00:00:00Z), with milliseconds where a slot has
them (2024-05-01T00:00:00.250Z): dtfleet failed list prints each failed slot's exact command.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, err := time.Parse(time.RFC3339, fromFlag)
			if err != nil {
				return fmt.Errorf("--from %q is not an RFC 3339 time: %w", fromFlag, err)
			}
			to, err := time.Parse(time.RFC3339, toFlag)
			if err != nil {
				return fmt.Errorf("--to %q is not an RFC 3339 time: %w", toFlag, err)
			}
			return withBus(cmd, g, cf, func(cfg *config.Config, b *bus.Bus) error {
				lg, _ := g.logger() // withBus checked the flags
				ln, err := inspect.FindLane(cfg, input, service)
				if err != nil {
					return err
				}
				items, err := coordinator.Replay(cmd.Context(), b, b.JS, ln, from, to, coordinator.ReplayOptions{Force: force, Logger: lg})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "republished %d slots of %s.%s (seq %d-%d), force=%v\n",
					len(items), ln.Input, ln.Service, items[0].Seq, items[len(items)-1].Seq, force)
				return nil
			})
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().StringVar(&service, "service", "", "service to replay (modelbreaches, aianalyst_incidentevents, antigena)")
	cmd.Flags().StringVar(&input, "input", "", "input name (default: the only enabled input)")
	cmd.Flags().StringVar(&fromFlag, "from", "", "range start, RFC 3339")
	cmd.Flags().StringVar(&toFlag, "to", "", "range end, RFC 3339")
	cmd.Flags().BoolVar(&force, "force", false, "deliver again even events already delivered (bypass dedupe)")
	_ = cmd.MarkFlagRequired("service")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
