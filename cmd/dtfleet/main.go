// Command dtfleet moves every event a Darktrace RESPOND appliance produces into Devo, as a fleet of
// small roles (coordinator, workers, shipper) over NATS JetStream. One binary runs every role, with
// an embedded NATS server by default.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/logging"
)

// exitError carries a process exit status through cobra without printing twice.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// globalFlags are shared by every subcommand.
type globalFlags struct {
	logLevel  string
	logFormat string
}

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the CLI and returns the process exit status: an *exitError's code, else
// fleet.ExitCode (2 for a configuration error, 3 for an authentication failure, 1 otherwise).
func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil && ee.err.Error() != "" {
				fmt.Fprintln(os.Stderr, "dtfleet:", ee.err)
			}
			return ee.code
		}
		fmt.Fprintln(os.Stderr, "dtfleet:", err)
		return fleet.ExitCode(err)
	}
	return 0
}

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "dtfleet",
		Short:         "Collect Darktrace RESPOND events into Devo with a NATS JetStream fleet",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	// Subcommands, one constructor each; keep this list sorted.
	root.AddCommand(
		newBenchCmd(g),
		newCheckCmd(g),
		newDefinitionsCmd(g),
		newDemoCmd(g),
		newDevoSinkCmd(g),
		newFailedCmd(g),
		newFetchCmd(g),
		newReplayCmd(g),
		newRunCmd(g),
		newSimulateCmd(g),
		newStatusCmd(g),
		newValidateCmd(g),
		newVersionCmd(),
	)
	root.AddCommand(newRoleCmds(g)...) // coordinator, worker, shipper
	return root
}

// logger builds the process logger from the global flags; logs go to stderr so that commands
// that print data (fetch, console output) keep stdout clean.
func (g *globalFlags) logger() (*slog.Logger, error) {
	return logging.New(os.Stderr, g.logLevel, g.logFormat)
}
