package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/inspect"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

func newFetchCmd(g *globalFlags) *cobra.Command {
	var cf *configFlags
	f := &inspect.FetchRequest{}
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch one window of one service from the appliance and print its raw events",
		Long:  help("fetch"),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			// A wrong --service is a usage error even when the configuration is bad too.
			if err := inspect.CheckService(f.Service); err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, err := cf.load()
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			err = inspect.Fetch(cmd.Context(), cfg, *f, logger, cmd.OutOrStdout(), cmd.ErrOrStderr())
			var ue *inspect.UsageError
			switch {
			case errors.As(err, &ue):
				return &exitError{code: 2, err: err}
			case err != nil:
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	cf = addConfigFlags(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.Input, "input", "", "input to fetch from (default: the only enabled input)")
	fl.StringVar(&f.Service, "service", "", "service: "+fmt.Sprint(config.Services))
	fl.StringVar(&f.From, "from", "", "window start, RFC 3339 (windowed services)")
	fl.StringVar(&f.To, "to", "", "window end, RFC 3339, exclusive (windowed services)")
	fl.BoolVar(&f.Process, "process", false, "flatten, obfuscate and sort as a worker does, and print key, time and event")
	fl.DurationVar(&f.Timeout, "timeout", darktrace.DefaultTimeout, "give up when the appliance sends nothing (no headers, or no body bytes) for this long")
	_ = cmd.MarkFlagRequired("service")
	return cmd
}
