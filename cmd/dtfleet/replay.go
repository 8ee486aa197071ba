package main

import (
	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/ops"
)

func newReplayCmd(g *globalFlags) *cobra.Command {
	var (
		cf *configFlags
		o  ops.ReplayOptions
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Re-fetch a time range of a service by republishing its slots",
		Long:  help("replay"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOps(cmd, g, cf, func(e ops.Env) error { return ops.Replay(cmd.Context(), e, o) })
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().StringVar(&o.Service, "service", "", "service to replay (modelbreaches, aianalyst_incidentevents, antigena)")
	cmd.Flags().StringVar(&o.Input, "input", "", "input name (default: the only enabled input)")
	cmd.Flags().StringVar(&o.From, "from", "", "range start, RFC 3339")
	cmd.Flags().StringVar(&o.To, "to", "", "range end, RFC 3339")
	cmd.Flags().BoolVar(&o.NoWait, "no-wait", false, "return once the slots are republished, without waiting for their delivery")
	cmd.Flags().BoolVar(&o.Force, "force", false, "deliver again even events already delivered (bypass dedupe)")
	_ = cmd.MarkFlagRequired("service")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}
