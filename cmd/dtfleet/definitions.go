package main

import (
	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/config"
)

func newDefinitionsCmd(_ *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "definitions",
		Short: "Print the embedded service definitions, a starting point for --definitions FILE",
		Long: `definitions prints the service definitions built into dtfleet (endpoints, default Devo tags,
time windows, persistence versions, date_format and request periods per service, in the shape of
the Devo collector's collector_definitions.yaml). Save the output, edit it, and pass it to any
command with --definitions FILE to replace the embedded definitions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.EmbeddedDefinitions())
			return err
		},
	}
}
