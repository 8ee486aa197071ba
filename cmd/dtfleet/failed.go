package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/status"
)

func newFailedCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "failed", Short: "List or clear the records of slots that failed for good"}
	var (
		cf             *configFlags
		asJSON, all    bool
		input, service string
	)
	list := &cobra.Command{
		Use: "list", Short: "List failed slots, each with the replay command that clears it", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBus(cmd, g, cf, func(_ *config.Config, b *bus.Bus) error {
				fs, err := status.ListFailed(cmd.Context(), b)
				if err != nil || !asJSON {
					status.PrintFailed(cmd.OutOrStdout(), fs)
					return err
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(fs)
			})
		},
	}
	cf = addConfigFlags(list)
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	var ccf *configFlags
	clear := &cobra.Command{
		Use:   "clear [KEY...]",
		Short: "Delete failure records (by key, --input/--service, or --all) without replaying them",
		Long: `clear deletes failure records: the ones named by KEY (as failed list prints them), those of
--input and/or --service, or --all. It only silences the alert: the window's events stay missing
until it is replayed, and a replay that delivers the window clears its record by itself.`,
		RunE: func(cmd *cobra.Command, keys []string) error {
			if !all && len(keys) == 0 && input == "" && service == "" {
				return &exitError{code: 2, err: errors.New("failed clear: name KEYs, --input/--service, or --all")}
			}
			match := func(f status.FailedSlot) bool {
				return all || slices.Contains(keys, f.Key) ||
					(len(keys) == 0 && (input == "" || f.Input == input) && (service == "" || f.Service == service))
			}
			return withBus(cmd, g, ccf, func(_ *config.Config, b *bus.Bus) error {
				cleared, err := status.ClearFailed(cmd.Context(), b, match)
				fmt.Fprintf(cmd.OutOrStdout(), "cleared %d failure record(s)\n", len(cleared))
				status.PrintFailed(cmd.OutOrStdout(), cleared)
				return err
			})
		},
	}
	ccf = addConfigFlags(clear)
	clear.Flags().BoolVar(&all, "all", false, "clear every failure record")
	clear.Flags().StringVar(&input, "input", "", "clear the records of this input")
	clear.Flags().StringVar(&service, "service", "", "clear the records of this service")
	cmd.AddCommand(list, clear)
	return cmd
}
