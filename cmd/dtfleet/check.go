package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/inspect"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

func newCheckCmd(g *globalFlags) *cobra.Command {
	var cf *configFlags
	var input string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate each enabled input's Darktrace tokens with one signed request",
		Long:  help("check"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, err := cf.load()
			if err != nil {
				return err
			}
			names := cfg.EnabledInputs()
			if input != "" {
				if _, ok := cfg.Inputs[input]; !ok {
					return &exitError{code: 2, err: fmt.Errorf("--input %s: no such input in %s", input, cf.path)}
				}
				names = []string{input}
			}
			if len(names) == 0 {
				return &exitError{code: 1, err: fmt.Errorf("%s has no enabled input to check", cf.path)}
			}
			failed := inspect.CheckTokens(cmd.Context(), cfg, names, timeout, logger, cmd.OutOrStdout())
			if len(failed) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("token check failed for %d of %d input(s): %v", len(failed), len(names), failed)}
			}
			return nil
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().StringVar(&input, "input", "", "check only this input (default: every enabled input)")
	cmd.Flags().DurationVar(&timeout, "timeout", darktrace.DefaultTimeout, "give up when the appliance sends nothing for this long")
	return cmd
}
