package worker_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// TestCheckInputsLogsSetup: the token check logs the Devo collector's setup lines, in its order
// and wording, when the appliance accepts the tokens; and no success line when it refuses them.
func TestCheckInputsLogsSetup(t *testing.T) {
	for _, tc := range []struct {
		name    string
		faults  darktracetest.Faults
		want    []string
		notWant []string
	}{
		{name: "accepted", want: []string{"Starting the execution of setup()", "Tokens have been validated successfully.",
			"Finalizing the execution of setup()", "Setup for module <CollectorDarktracePuller> has been successfully executed"}},
		{name: "refused", faults: darktracetest.Faults{Script: []darktracetest.Fault{{Kind: darktracetest.FaultForbidden, Times: -1}}},
			want:    []string{"Starting the execution of setup()"},
			notWant: []string{"Tokens have been validated", "Finalizing the execution of setup()", "has been successfully executed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, _ := fakeAppliance(t, tc.faults)
			var logs logtest.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, nil))
			b := bustest.New(t)
			cfg := testConfig(t, fake.URL)
			// No Fetchers: the worker builds its Darktrace client from cfg, logging to logger.
			w, err := worker.New(endpoints(t, b), cfg, worker.Options{Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			err = w.CheckInputs(context.Background())
			if (err != nil) != (len(tc.notWant) > 0) {
				t.Fatalf("CheckInputs = %v", err)
			}
			out, at := logs.String(), 0
			for _, line := range tc.want {
				i := strings.Index(out[at:], line)
				if i < 0 {
					t.Fatalf("log lacks %q after offset %d (or out of order):\n%s", line, at, out)
				}
				at += i + len(line)
			}
			for _, line := range tc.notWant {
				if strings.Contains(out, line) {
					t.Fatalf("log has %q:\n%s", line, out)
				}
			}
		})
	}
}
