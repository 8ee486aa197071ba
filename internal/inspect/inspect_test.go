package inspect_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/inspect"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func load(t *testing.T, y string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const twoInputs = `outputs:
  file_1: {type: file, config: {path: out.log}}
inputs:
  a:
    credentials: {public_token: p, private_token: q, instance: https://a.example.com}
    services: {modelbreaches: {}, status: {enabled: false}}
  b:
    credentials: {public_token: p, private_token: q, instance: https://b.example.com}
`

func TestSummary(t *testing.T) {
	var out bytes.Buffer
	inspect.Summary(&out, load(t, twoInputs))
	for _, want := range []string{"OK\n", "nats: embedded server", "input a: https://a.example.com",
		"services: only the ones listed under inputs.a.services run", "status: disabled (enabled: false)",
		"antigena: off (not listed under services)", "services: no services mapping, so all 5 run", "output file_1: file "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "private_token") || strings.Contains(out.String(), ": q") {
		t.Errorf("the summary shows a token:\n%s", out.String())
	}
}

func TestFindLane(t *testing.T) {
	cfg := load(t, twoInputs)
	tests := []struct {
		input, service, wantErr string
	}{
		{"a", config.ServiceModelBreaches, ""},
		{"b", config.ServiceAntigena, ""},
		{"", config.ServiceModelBreaches, "--input is required"},
		{"a", config.ServiceAntigena, `no enabled service "antigena" on input "a"`},
		{"a", config.ServiceStatus, `no enabled service "status"`},
	}
	for _, tt := range tests {
		ln, err := inspect.FindLane(cfg, tt.input, tt.service)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("FindLane(%q, %q) = %v, %v; want error %q", tt.input, tt.service, ln, err, tt.wantErr)
			}
			continue
		}
		if err != nil || ln.Input != tt.input || ln.Service != tt.service {
			t.Errorf("FindLane(%q, %q) = %+v, %v", tt.input, tt.service, ln, err)
		}
	}
}

// TestFetchUsageErrors: mistakes in the request are UsageErrors, found before any request.
func TestFetchUsageErrors(t *testing.T) {
	cfg := load(t, twoInputs)
	tests := []struct {
		name    string
		r       inspect.FetchRequest
		wantErr string
	}{
		{"unknown service", inspect.FetchRequest{Input: "a", Service: "breaches"}, "--service must be one of"},
		{"ambiguous input", inspect.FetchRequest{Service: config.ServiceStatus}, "pass --input NAME"},
		{"unknown input", inspect.FetchRequest{Input: "c", Service: config.ServiceStatus}, "--input c: no such input"},
		{"no from", inspect.FetchRequest{Input: "a", Service: config.ServiceModelBreaches, To: "2024-05-01T00:00:00Z"}, "--from is required"},
		{"bad to", inspect.FetchRequest{Input: "a", Service: config.ServiceModelBreaches, From: "2024-05-01T00:00:00Z", To: "May 2"}, "--to"},
		{"empty window", inspect.FetchRequest{Input: "a", Service: config.ServiceModelBreaches, From: "2024-05-01T00:00:00Z", To: "2024-05-01T00:00:00Z"}, "must be after"},
	}
	for _, tt := range tests {
		err := inspect.Fetch(context.Background(), cfg, tt.r, slog.New(slog.DiscardHandler), io.Discard, io.Discard)
		var ue *inspect.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: Fetch = %v, want a UsageError saying %q", tt.name, err, tt.wantErr)
		}
	}
}
