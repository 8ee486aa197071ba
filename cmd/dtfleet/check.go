package main

import (
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/worker/darktrace"
)

func newCheckCmd(g *globalFlags) *cobra.Command {
	var cf *configFlags
	var input string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Validate each enabled input's Darktrace tokens with one signed request",
		Long: `check loads the configuration and, for each enabled input (or only --input NAME), sends one
cheap signed request to the appliance, of a service the input runs (status, else
summarystatistics, else the last minute of a windowed service). It prints one
line per input: "Tokens have been validated successfully." or the classified error
(PullError(300) for HTTP errors such as a refused signature, a clock more than 30 minutes off or a
missing permission; PullError(301) for the others, such as TLS or connection failures). It exits 1
if any input fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			cfg, err := cf.load()
			if err != nil {
				return &exitError{code: 1, err: err}
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
			out := cmd.OutOrStdout()
			var failed []string
			for _, name := range names {
				in := cfg.Inputs[name]
				dc := darktrace.ConfigFromInput(in)
				dc.Logger = logger.With("input", name)
				dc.Timeout = timeout
				c, err := darktrace.New(dc)
				if err == nil {
					// A call of a service the input runs anyway, never one that is off.
					if req, ok := darktrace.CheckRequest(in, time.Now()); ok {
						err = c.CheckWith(cmd.Context(), req)
					} else {
						err = c.Check(cmd.Context())
					}
					c.Close()
				}
				if err != nil {
					failed = append(failed, name)
					fmt.Fprintf(out, "input %s (%s): %v\n", name, in.Credentials.Instance, err)
					continue
				}
				fmt.Fprintf(out, "input %s (%s): Tokens have been validated successfully.\n", name, in.Credentials.Instance)
			}
			if len(failed) > 0 {
				slices.Sort(failed)
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
