package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/inspect"
)

func newValidateCmd(_ *globalFlags) *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a configuration file and print every problem, or OK and what would run",
		Long:  help("validate"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := cf.load()
			if err != nil {
				es := config.AsErrors(err)
				if es == nil {
					return &exitError{code: 1, err: err}
				}
				out := cmd.OutOrStdout()
				for _, e := range es {
					fmt.Fprintln(out, e.Error())
				}
				noun := "problems"
				if len(es) == 1 {
					noun = "problem"
				}
				what := cf.path
				if cf.definitions != "" {
					what += " with definitions " + cf.definitions
				}
				return &exitError{code: 1, err: fmt.Errorf("%s is invalid (%d %s)", what, len(es), noun)}
			}
			inspect.Summary(cmd.OutOrStdout(), cfg)
			return nil
		},
	}
	cf = addConfigFlags(cmd)
	return cmd
}

// writeSummary prints OK and what a valid configuration runs.
