package demo_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/demo"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// TestRun runs a one-day demo to each kind of output: it catches up with nothing missing and
// nothing duplicated, prints its table, and leaves a configuration a user's `dtfleet validate`
// accepts.
func TestRun(t *testing.T) {
	for _, output := range []string{"file", "devo-tls"} {
		t.Run(output, func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			sum, err := demo.Run(context.Background(), demo.Options{Dir: dir, Days: 1, Output: output, Latency: time.Millisecond,
				Timeout: 3 * time.Minute, Quiet: true}, fleettest.Logger(t), &out, io.Discard)
			if err != nil {
				t.Fatalf("demo: %v\n%s", err, out.String())
			}
			if sum.Missing != 0 || sum.Duplicates != 0 || sum.Delivered == 0 {
				t.Errorf("summary %+v", sum)
			}
			// The progress bar's total: every windowed slot up to the data's end, and only those.
			if sum.Slots != sum.PlannedSlots || sum.Slots == 0 {
				t.Errorf("%d slots delivered of the %d the progress counts", sum.Slots, sum.PlannedSlots)
			}
			for _, want := range []string{"TAG  ", "GROUND TRUTH", "edr.darktrace.respond.model_breach", "(snapshot)"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			if _, err := os.Stat(sum.OutPath); err != nil {
				t.Errorf("the Devo lines are not at %s: %v", sum.OutPath, err)
			}
			cfg, err := config.Load(filepath.Join(dir, "config.yaml"), config.LoadOptions{})
			if err != nil {
				t.Fatalf("the demo's config.yaml does not load: %v", err)
			}
			if got := len(cfg.Lanes()); got != len(config.Services) {
				t.Errorf("the demo's config runs %d services, want %d", got, len(config.Services))
			}
		})
	}
}

func TestRunRejectsUnknownOutput(t *testing.T) {
	_, err := demo.Run(context.Background(), demo.Options{Dir: t.TempDir(), Days: 1, Output: "kafka"}, fleettest.Logger(t), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--output") {
		t.Fatalf("Run = %v, want an error about --output", err)
	}
}
