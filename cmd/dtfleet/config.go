package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/ops"
	"github.com/dtfleet/dtfleet/internal/status"
)

// configFlags are the configuration flags every command that reads the configuration shares:
// -c/--config FILE and --definitions FILE.
type configFlags struct {
	cmd         *cobra.Command
	path        string
	definitions string
	// busOnly marks a command that reads only the bus (status, failed, replay): unset ${ENV}
	// variables, the Darktrace tokens' usually, get a placeholder instead of failing.
	busOnly bool
}

// addConfigFlags registers -c/--config (required) and --definitions on cmd and returns their
// values, to be read with load once the command runs.
func addConfigFlags(cmd *cobra.Command) *configFlags {
	f := &configFlags{cmd: cmd}
	cmd.Flags().StringVarP(&f.path, "config", "c", "", "configuration file (YAML, in the shape of Devo's collector config)")
	cmd.Flags().StringVar(&f.definitions, "definitions", "", "service definitions file replacing the embedded one (collector_definitions shape)")
	_ = cmd.MarkFlagRequired("config") // only fails for an unknown flag name
	return f
}

// load reads and validates the configuration named by the flags.
func (f *configFlags) load() (*config.Config, error) {
	if f.busOnly {
		return loadConfigEnv(f.cmd, f.path, f.definitions, status.EnvOrPlaceholder)
	}
	return loadConfig(f.cmd, f.path, f.definitions)
}

// loadConfig reads and validates the configuration file at path, with the definitions file defs
// ("" for the embedded definitions). On invalid input the error lists every problem, one per
// line, under a first line naming the file; it wraps the config.Errors. Every error is a
// *fleet.ConfigError, so the process exits with status 2.
func loadConfig(cmd *cobra.Command, path, defs string) (*config.Config, error) {
	return loadConfigEnv(cmd, path, defs, nil)
}

// loadConfigEnv is loadConfig resolving ${NAME} with lookup (nil: os.LookupEnv).
func loadConfigEnv(cmd *cobra.Command, path, defs string, lookup func(string) (string, bool)) (*config.Config, error) {
	if path == "" {
		return nil, &fleet.ConfigError{Err: fmt.Errorf("%s: no configuration file; pass -c FILE", cmd.CommandPath())}
	}
	cfg, err := config.Load(path, config.LoadOptions{DefinitionsPath: defs, LookupEnv: lookup})
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			noun := "problems"
			if len(es) == 1 {
				noun = "problem"
			}
			err = fmt.Errorf("invalid configuration %s (%d %s):\n%w", path, len(es), noun, err)
		}
		return nil, &fleet.ConfigError{Err: err}
	}
	return cfg, nil
}

// runOps runs fn with cf's configuration, for a command that only reads or changes the bus
// (status, failed, replay): such a command needs no Darktrace secret (configFlags.busOnly).
func runOps(cmd *cobra.Command, g *globalFlags, cf *configFlags, fn func(ops.Env) error) error {
	logger, err := g.logger()
	if err != nil {
		return err
	}
	cf.busOnly = true
	cfg, err := cf.load()
	if err != nil {
		return err
	}
	return fn(ops.Env{Config: cfg, Logger: logger, Out: cmd.OutOrStdout(), Show: g.show(cmd, logger)})
}

// show is where a command's progress goes: stderr, or the logger with --log-format json.
func (g *globalFlags) show(cmd *cobra.Command, logger *slog.Logger) ops.Show {
	return ops.ShowOn(cmd.ErrOrStderr(), logger, g.logFormat == "json")
}
