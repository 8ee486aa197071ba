package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/ops"
)

func newFailedCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "failed", Short: "List or clear the records of slots that failed for good"}
	var (
		lcf, ccf *configFlags
		asJSON   bool
		sel      ops.Selector
	)
	list := &cobra.Command{
		Use: "list", Short: "List failed slots, each with the replay command that clears it", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOps(cmd, g, lcf, func(e ops.Env) error { return ops.FailedList(cmd.Context(), e, asJSON) })
		},
	}
	lcf = addConfigFlags(list)
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	clear := &cobra.Command{
		Use:   "clear [KEY...]",
		Short: "Delete failure records (by key, --input/--service, or --all) without replaying them",
		Long:  help("failed-clear"),
		RunE: func(cmd *cobra.Command, keys []string) error {
			sel.Keys = keys
			err := runOps(cmd, g, ccf, func(e ops.Env) error { return ops.FailedClear(cmd.Context(), e, sel) })
			if errors.Is(err, ops.ErrNoSelector) {
				return &exitError{code: 2, err: err}
			}
			return err
		},
	}
	ccf = addConfigFlags(clear)
	clear.Flags().BoolVar(&sel.All, "all", false, "clear every failure record")
	clear.Flags().StringVar(&sel.Input, "input", "", "clear the records of this input")
	clear.Flags().StringVar(&sel.Service, "service", "", "clear the records of this service")
	cmd.AddCommand(list, clear)
	return cmd
}
