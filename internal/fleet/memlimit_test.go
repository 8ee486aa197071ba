package fleet_test

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// TestMemoryLimitFromConfig runs a fleet and reads the process's soft memory limit while it
// runs: Run sets it from globals.memory_limit_in_mb and logs it, leaves it alone when GOMEMLIMIT
// is set (the runtime applied that at start-up; the log names the variable) or when the key is 0,
// and puts back the limit it found when it returns. The memory limit is process-wide, so this
// test does not run in parallel with the package's other tests (top-level parallel tests wait
// for the sequential ones).
func TestMemoryLimitFromConfig(t *testing.T) {
	const sentinel = 777 << 20 // the limit the process had before the fleet started
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })

	tests := []struct {
		name      string
		configMB  int
		env       map[string]string
		wantLimit int64
		wantLog   string
	}{
		{"from the config", 123, nil, 123 << 20, `msg="soft memory limit set" limit_mib=123 from=globals.memory_limit_in_mb`},
		{"GOMEMLIMIT wins", 123, map[string]string{"GOMEMLIMIT": "999MiB"}, sentinel, `GOMEMLIMIT=999MiB`},
		{"0 is no limit", 0, nil, sentinel, "no soft memory limit (globals.memory_limit_in_mb: 0)"},
	}
	env := fleettest.NewEnv(t, 1)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(sentinel)
			cfg := *env.Config
			cfg.Globals.MemoryLimitInMB = tc.configMB
			var logs logtest.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			f, err := fleet.Start(context.Background(), fleet.Fleet{Config: &cfg, Roles: fleet.AllRoles,
				Deps: fleet.Dependencies{Logger: logger, Outputs: []devo.Output{fleettest.NewRecorder()},
					Getenv: func(k string) string { return tc.env[k] }},
				Overrides: fleet.Overrides{Listen: "none"}})
			if err != nil {
				t.Fatal(err)
			}
			// Start returns once the bus is provisioned, after Run set the limit.
			got := debug.SetMemoryLimit(-1)
			if err := f.Stop(); err != nil {
				t.Fatalf("stopping the fleet: %v", err)
			}
			if got != tc.wantLimit {
				t.Errorf("memory limit while running = %d MiB, want %d MiB", got>>20, tc.wantLimit>>20)
			}
			if after := debug.SetMemoryLimit(-1); after != sentinel {
				t.Errorf("memory limit after Run returned = %d MiB, want the %d MiB it found", after>>20, sentinel>>20)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("the log does not say %q:\n%s", tc.wantLog, logs.String())
			}
		})
	}
}
