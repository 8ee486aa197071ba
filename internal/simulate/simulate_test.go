package simulate_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/simulate"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSimulateOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		flags simulate.Appliance
		want  string
	}{
		{"rates", simulate.Appliance{Days: 2, PublicToken: "p", PrivateToken: "q", EventsPerHour: []string{"modelbreaches=100", "antigena=0.5"}}, ""},
		{"unknown service", simulate.Appliance{PublicToken: "p", PrivateToken: "q", EventsPerHour: []string{"status=1"}}, "service must be"},
		{"not a number", simulate.Appliance{PublicToken: "p", PrivateToken: "q", EventsPerHour: []string{"antigena=many"}}, "non-negative number"},
		{"no equals", simulate.Appliance{PublicToken: "p", PrivateToken: "q", EventsPerHour: []string{"antigena"}}, "want service=N"},
		{"fault rate", simulate.Appliance{PublicToken: "p", PrivateToken: "q", FaultRate: 2}, "--fault-rate"},
		{"negative days", simulate.Appliance{PublicToken: "p", PrivateToken: "q", Days: -1}, "--days"},
		{"empty token", simulate.Appliance{PublicToken: "p"}, "must not be empty"},
		{"negative span", simulate.Appliance{PublicToken: "p", PrivateToken: "q", Span: -time.Hour}, "--span"},
		{"unknown fault kind", simulate.Appliance{PublicToken: "p", PrivateToken: "q", FaultKinds: []string{"status", "meteor"}}, "--fault-kinds"},
		{"bad fault spec", simulate.Appliance{PublicToken: "p", PrivateToken: "q", Faults: []string{"status,status=abc"}}, "--fault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts, err := tt.flags.Options()
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("got %v, want %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if opts.EventsPerHour[config.ServiceModelBreaches] != 100 || opts.EventsPerHour[config.ServiceAntigena] != 0.5 ||
				time.Since(opts.Start) < 48*time.Hour || !opts.End.After(time.Now().Add(24*time.Hour)) {
				t.Fatalf("options %+v", opts)
			}
		})
	}
}

// TestSimulateFaultFlags checks that --fault, --fault-kinds and --span reach the fake's options.
func TestSimulateFaultFlags(t *testing.T) {
	t.Parallel()
	f := simulate.Appliance{PublicToken: "p", PrivateToken: "q", Days: 7, Span: 36 * time.Hour, FaultRate: 0.5,
		FaultKinds: []string{"status", "reset"},
		Faults:     []string{"rate_limit,retry_after=3s,times=2", "input_error,service=modelbreaches,start=1715248800000,end=1715252400000,times=-1"}}
	opts, err := f.Options()
	if err != nil {
		t.Fatal(err)
	}
	want := []darktracetest.Fault{
		{Kind: darktracetest.FaultRateLimit, RetryAfter: 3 * time.Second, Times: 2},
		{Kind: darktracetest.FaultInputError, Endpoint: "/modelbreaches", Start: time.UnixMilli(1715248800000).UTC(), End: time.UnixMilli(1715252400000).UTC(), Times: -1},
	}
	if !slices.Equal(opts.Faults.Script, want) || opts.Faults.Rate != 0.5 ||
		!slices.Equal(opts.Faults.Kinds, []darktracetest.FaultKind{darktracetest.FaultStatus, darktracetest.FaultReset}) {
		t.Fatalf("faults %+v", opts.Faults)
	}
	if age := time.Since(opts.Start); age < 36*time.Hour || age > 38*time.Hour {
		t.Fatalf("--span 36h gave data from %v ago", age)
	}
}
