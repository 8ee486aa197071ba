package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// Process exit statuses. systemd units stop restarting on ExitConfig and ExitAuth
// (RestartPreventExitStatus=2 3): restarting every few seconds cannot fix either, and a bad
// token retried forever only fills the appliance's audit log.
const (
	// ExitFailure is any other failure.
	ExitFailure = 1
	// ExitConfig is a configuration error: the file is missing, unreadable or invalid.
	ExitConfig = 2
	// ExitAuth is an authentication failure at the start-up token check that persisted through
	// its short retry: the token pair is refused, the host clock is off or the token lacks a
	// permission.
	ExitAuth = 3
)

// ConfigError marks an error as a configuration error (exit status ExitConfig).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// ExitCode maps err to the process exit status: 0 for nil, ExitConfig for a *ConfigError or a
// config.Errors anywhere in its chain, ExitAuth for a Darktrace authentication failure
// (refused signature, date, authentication or permission), ExitFailure otherwise.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ce *ConfigError
	if errors.As(err, &ce) || config.AsErrors(err) != nil {
		return ExitConfig
	}
	if isAuthFailure(err) {
		return ExitAuth
	}
	return ExitFailure
}

// isAuthFailure reports whether err is a Darktrace failure that only new tokens, a corrected
// clock or a granted permission can fix.
func isAuthFailure(err error) bool {
	var dt *darktrace.Error
	if !errors.As(err, &dt) {
		return false
	}
	switch dt.Kind {
	case darktrace.KindSignature, darktrace.KindDate, darktrace.KindAuth, darktrace.KindPermission:
		return true
	}
	return false
}

// checkDelays are the waits between the start-up token checks: a refused signature or a clock
// off is retried for about seven seconds (long enough for a token rotation or a clock step to
// land, short enough that systemd sees the failure promptly) before the process gives up.
var checkDelays = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}

// checkInputs runs the worker's start-up token check, retrying a Transient failure (a refused
// signature) after each of checkDelays; the last failure is returned.
func checkInputs(ctx context.Context, w *worker.Worker, clock clockwork.Clock, logger *slog.Logger) error {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	for i := 0; ; i++ {
		err := w.CheckInputs(ctx)
		if err == nil || darktrace.ClassOf(err) != darktrace.Transient || i == len(checkDelays) {
			return err
		}
		logger.Warn("the token check failed; retrying", "err", err, "retry_in", checkDelays[i])
		select {
		case <-ctx.Done():
			return fmt.Errorf("checking the tokens: %w", ctx.Err())
		case <-clock.After(checkDelays[i]):
		}
	}
}
