package main

import (
	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/config"
)

func newDefinitionsCmd(_ *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "definitions",
		Short: "Print the embedded service definitions, a starting point for --definitions FILE",
		Long:  help("definitions"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.EmbeddedDefinitions())
			return err
		},
	}
}
