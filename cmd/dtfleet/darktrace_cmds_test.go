package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// fakeApplianceConfig starts a fake appliance whose clock is frozen near the real one (the
// client dates its requests with the real clock) and writes a configuration for it.
func fakeApplianceConfig(t *testing.T, privateToken string) (*darktracetest.Server, string) {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Minute)
	end := now.Truncate(time.Hour)
	fake := darktracetest.NewServer(darktracetest.Options{
		Seed: 11, Start: end.Add(-24 * time.Hour), End: end, EventSize: 1000,
		Now: func() time.Time { return now },
	})
	t.Cleanup(fake.Close)
	path := filepath.Join(t.TempDir(), "config.yaml")
	y := fmt.Sprintf(`outputs:
  console_1: {type: console}
inputs:
  darktrace:
    credentials: {public_token: %s, private_token: %s, instance: %s}
    services:
      modelbreaches: {look_back_in_minutes: 30}
`, darktracetest.DefaultPublicToken, privateToken, fake.URL)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return fake, path
}

// executeDT runs the CLI with args and returns stdout, stderr and the error.
func executeDT(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(args, "--log-level", "error"))
	err := root.ExecuteContext(t.Context())
	return out.String(), errOut.String(), err
}

func TestFetchPrintsGroundTruth(t *testing.T) {
	t.Parallel()
	fake, cfgPath := fakeApplianceConfig(t, darktracetest.DefaultPrivateToken)
	to := fake.Options().End.Add(-3 * time.Hour)
	from := to.Add(-5 * time.Hour)
	for _, svc := range config.Services {
		t.Run(svc, func(t *testing.T) {
			out, errOut, err := executeDT(t, "fetch", "-c", cfgPath, "--service", svc,
				"--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339))
			if err != nil {
				t.Fatalf("fetch: %v\n%s", err, errOut)
			}
			// Each windowed service's request starts its look-back before from.
			qs := from
			switch svc {
			case config.ServiceModelBreaches:
				qs = from.Add(-30 * time.Minute)
			case config.ServiceIncidentEvents:
				qs = from.Add(-config.DefaultIncidentLookBackInMinutes * time.Minute)
			case config.ServiceAntigena:
				qs = from.Add(-config.DefaultAntigenaLookBackInMinutes * time.Minute)
			}
			var want strings.Builder
			events := fake.Events(svc, qs, to)
			if svc == config.ServiceModelBreaches {
				// Breaches are fetched by creation time (creationtime=true): those created in
				// [qs, to], whatever their time (the fake creates one up to an hour late).
				events = createdIn(t, fake.Events(svc, qs.Add(-2*time.Hour), to), qs, to)
			}
			for _, ev := range events {
				want.Write(ev)
				want.WriteByte('\n')
			}
			if len(events) == 0 || out != want.String() {
				t.Fatalf("stdout differs from the %d ground-truth events:\n got %.300s\nwant %.300s", len(events), out, want.String())
			}
			if !strings.Contains(errOut, fmt.Sprintf(": %d events, ", len(events))) {
				t.Fatalf("summary line: %q", errOut)
			}
		})
	}
}

// TestFetchProcess checks that fetch --process prints what a worker makes of the response:
// status flattened into one event per node, AI Analyst events sorted by time, with their keys.
func TestFetchProcess(t *testing.T) {
	t.Parallel()
	fake, cfgPath := fakeApplianceConfig(t, darktracetest.DefaultPrivateToken)
	to := fake.Options().End.Add(-time.Hour)
	from := to.Add(-12 * time.Hour)
	tests := []struct {
		service   string
		wantKeys  string // prefix of every key
		wantCount func(raw int) bool
	}{
		{config.ServiceStatus, "st:", func(raw int) bool { return raw > 1 }},
		{config.ServiceIncidentEvents, "ai:", func(raw int) bool {
			return raw == len(fake.Events(config.ServiceIncidentEvents, from.Add(-config.DefaultIncidentLookBackInMinutes*time.Minute), to))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.service, func(t *testing.T) {
			out, errOut, err := executeDT(t, "fetch", "-c", cfgPath, "--service", tt.service, "--process",
				"--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339))
			if err != nil {
				t.Fatalf("fetch --process: %v\n%s", err, errOut)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			var last int64
			for i, line := range lines {
				var ev struct {
					Key   string          `json:"key"`
					Time  int64           `json:"time"`
					Event json.RawMessage `json:"event"`
				}
				if err := json.Unmarshal([]byte(line), &ev); err != nil || !strings.HasPrefix(ev.Key, tt.wantKeys) || len(ev.Event) == 0 {
					t.Fatalf("line %d %.200q: %v", i, line, err)
				}
				if ev.Time < last {
					t.Fatalf("line %d at %d comes after one at %d", i, ev.Time, last)
				}
				last = ev.Time
			}
			if !tt.wantCount(len(lines)) || !strings.Contains(errOut, fmt.Sprintf(", %d after processing", len(lines))) {
				t.Fatalf("%d processed events; stderr %q", len(lines), errOut)
			}
		})
	}
}

func TestFetchUsage(t *testing.T) {
	t.Parallel()
	_, cfgPath := fakeApplianceConfig(t, darktracetest.DefaultPrivateToken)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown service", []string{"--service", "groups"}, "--service must be one of"},
		{"missing from", []string{"--service", "antigena", "--to", "2024-05-01T00:00:00Z"}, "--from is required"},
		{"bad to", []string{"--service", "antigena", "--from", "2024-05-01T00:00:00Z", "--to", "soon"}, "not an RFC 3339 time"},
		{"inverted", []string{"--service", "antigena", "--from", "2024-05-01T01:00:00Z", "--to", "2024-05-01T00:00:00Z"}, "must be after"},
		{"unknown input", []string{"--service", "status", "--input", "other"}, "no such input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := executeDT(t, append([]string{"fetch", "-c", cfgPath}, tt.args...)...)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want exit 2 with %q", err, tt.want)
			}
		})
	}
}

func TestFetchReportsClassifiedError(t *testing.T) {
	t.Parallel()
	fake, cfgPath := fakeApplianceConfig(t, darktracetest.DefaultPrivateToken)
	fake.AddFault(darktracetest.Fault{Kind: darktracetest.FaultRedirect403})
	_, errOut, err := executeDT(t, "fetch", "-c", cfgPath, "--service", "status")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(errOut, "PullError(300)") || !strings.Contains(errOut, "lacks permission for /status") {
		t.Fatalf("got %v, stderr %q", err, errOut)
	}
}

func TestCheckCommand(t *testing.T) {
	t.Parallel()
	_, good := fakeApplianceConfig(t, darktracetest.DefaultPrivateToken)
	out, _, err := executeDT(t, "check", "-c", good)
	if err != nil || !strings.Contains(out, "input darktrace (http://127.0.0.1:") || !strings.Contains(out, "Tokens have been validated successfully.") {
		t.Fatalf("good tokens: %v, %q", err, out)
	}
	_, bad := fakeApplianceConfig(t, "not-the-private-token")
	out, _, err = executeDT(t, "check", "-c", bad)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(out, "API SIGNATURE ERROR") || strings.Contains(out, "not-the-private-token") {
		t.Fatalf("bad tokens: %v, %q", err, out)
	}
}

// TestSimulateServes runs simulate --tls, builds a configuration from what it prints, and checks
// the tokens against it with the check command.
func TestSimulateServes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	root := newRootCmd()
	var out logtest.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"simulate", "--tls", "--days", "1", "--log-level", "error", "--events-per-hour", "modelbreaches=5"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), "summarystatistics: {}") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("simulate printed no configuration snippet: %s (%v)", out.String(), <-done)
		}
		<-tick.C
	}
	printed := out.String()
	snippet := printed[strings.Index(printed, "inputs:"):]
	if !strings.Contains(printed, "url: https://127.0.0.1:") || !strings.Contains(snippet, "tls: {ca_file: ") {
		t.Fatalf("simulate output:\n%s", printed)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("outputs:\n  console_1: {type: console}\n"+snippet), 0o600); err != nil {
		t.Fatal(err)
	}
	got, _, err := executeDT(t, "check", "-c", path)
	cancel()
	if serr := <-done; serr != nil {
		t.Fatalf("simulate: %v", serr)
	}
	if err != nil || !strings.Contains(got, "Tokens have been validated successfully.") {
		t.Fatalf("check against simulate: %v %q", err, got)
	}
}

// createdIn keeps the breaches whose creationTime is in [from, to], in their order.
func createdIn(t *testing.T, events [][]byte, from, to time.Time) [][]byte {
	t.Helper()
	var out [][]byte
	for _, ev := range events {
		var b struct {
			CreationTime int64 `json:"creationTime"`
		}
		if err := json.Unmarshal(ev, &b); err != nil {
			t.Fatal(err)
		}
		if b.CreationTime >= from.UnixMilli() && b.CreationTime <= to.UnixMilli() {
			out = append(out, ev)
		}
	}
	return out
}
