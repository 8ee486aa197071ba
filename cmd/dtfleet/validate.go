package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/config"
)

func newValidateCmd(_ *globalFlags) *cobra.Command {
	var cf *configFlags
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a configuration file and print every problem, or OK and what would run",
		Long: `validate reads the configuration (and the definitions), expands ${ENV}, applies the defaults
and checks every rule without opening any other file or connecting anywhere. On success it prints
OK and a summary of the inputs, their services and the outputs, and exits 0. An input with a
services mapping collects only the services listed there (each can also say enabled: false); an
input without one collects all five with their defaults. Otherwise it
prints every problem, one per line (InitVariablesError(ID): ... with the Devo collector's IDs, or
ConfigError: <key path>: ...), and exits 1.`,
		Args: cobra.NoArgs,
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
			writeSummary(cmd.OutOrStdout(), cfg)
			return nil
		},
	}
	cf = addConfigFlags(cmd)
	return cmd
}

// writeSummary prints OK and what a valid configuration runs.
func writeSummary(w io.Writer, cfg *config.Config) {
	fmt.Fprintln(w, "OK")
	if cfg.NATS.Embedded() {
		fmt.Fprintf(w, "nats: embedded server, store_dir %s, listen %s, replicas %d\n", cfg.NATS.StoreDir, cfg.NATS.Listen, cfg.NATS.Replicas)
	} else {
		fmt.Fprintf(w, "nats: %d server(s), replicas %d\n", len(cfg.NATS.URLs()), cfg.NATS.Replicas)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Inputs)) {
		in := cfg.Inputs[name]
		if !in.IsEnabled() {
			fmt.Fprintf(w, "input %s: disabled\n", name)
			continue
		}
		fmt.Fprintf(w, "input %s: %s, %s requests/s\n", name, in.Credentials.Instance, strconv.FormatFloat(in.RequestsPerSecond, 'f', -1, 64))
		if in.TLS.InsecureSkipVerify {
			fmt.Fprintf(w, "  warning: tls.insecure_skip_verify is true: the appliance's certificate is not verified and the connection can be intercepted; prefer tls.ca_file\n")
		}
		if in.ServicesListed {
			fmt.Fprintf(w, "  services: only the ones listed under inputs.%s.services run; add a service there to collect it\n", name)
		} else {
			fmt.Fprintf(w, "  services: no services mapping, so all %d run with their defaults\n", len(config.Services))
		}
		for _, svc := range config.Services {
			s, ok := in.Services[svc]
			if !ok {
				continue
			}
			if !s.IsEnabled() {
				if s.Listed {
					fmt.Fprintf(w, "  %s: disabled (enabled: false)\n", svc)
				} else {
					fmt.Fprintf(w, "  %s: off (not listed under services)\n", svc)
				}
				continue
			}
			parts := []string{"tag " + s.Tag}
			if s.Snapshot {
				parts = append(parts, "snapshot")
			} else {
				parts = append(parts, "window "+shortDuration(s.Window))
			}
			parts = append(parts, "period "+shortDuration(s.Period))
			if svc == config.ServiceModelBreaches {
				parts = append(parts, "look-back "+shortDuration(s.LookBack))
			}
			if svc == config.ServiceStatus {
				parts = append(parts, "flatten "+strconv.FormatBool(s.FlattenStatus()))
			}
			if !s.Snapshot {
				if s.StartTime.IsZero() {
					parts = append(parts, "start now")
				} else {
					parts = append(parts, "start "+s.StartTime.UTC().Format(time.RFC3339))
				}
			}
			if s.Obfuscation != nil {
				parts = append(parts, fmt.Sprintf("obfuscation %d hashed/%d masked", len(s.Obfuscation.Hash), len(s.Obfuscation.Mask)))
			}
			fmt.Fprintf(w, "  %s: %s\n", svc, strings.Join(parts, ", "))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Outputs)) {
		o := cfg.Outputs[name]
		if !o.IsEnabled() {
			fmt.Fprintf(w, "output %s: %s, disabled\n", name, o.Type)
			continue
		}
		c := o.Config
		switch o.Type {
		case config.OutputDevoPlatform, config.OutputRelay:
			fmt.Fprintf(w, "output %s: %s %s:%d\n", name, o.Type, c.Address, c.Port)
		case config.OutputHTTP:
			fmt.Fprintf(w, "output %s: http %s, domain %s\n", name, c.URL, c.Domain)
		case config.OutputFile:
			fmt.Fprintf(w, "output %s: file %s\n", name, c.Path)
		default:
			fmt.Fprintf(w, "output %s: %s\n", name, o.Type)
		}
	}
}

// shortDuration prints whole minutes and hours without trailing zero units: 1h, 90m → 1h30m, 60s → 1m.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
