package simulate

import (
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// TestSimulateUntidinessFlags: the untidiness flags reach the fake's options, --realistic turns
// everything on, and bad values are rejected naming their flag.
func TestSimulateUntidinessFlags(t *testing.T) {
	t.Parallel()
	base := func() Appliance {
		return Appliance{Days: 1, PublicToken: "p", PrivateToken: "q", MaxBreachDelay: 3 * time.Hour, IncidentWindow: "event", ActionWindow: "event"}
	}
	tests := []struct {
		name   string
		mod    func(*Appliance)
		want   darktracetest.Untidiness
		real   bool
		errMsg string
	}{
		{name: "tidy by default", mod: func(*Appliance) {}, want: darktracetest.Untidiness{MaxBreachDelay: 3 * time.Hour}},
		{name: "every knob", mod: func(f *Appliance) {
			f.LateBreaches, f.MaxBreachDelay, f.IncidentDelay, f.IncidentWindow = 0.2, 2*time.Hour, 5*time.Minute, "change"
			f.ActionLifecycle, f.ActionWindow, f.ClockOffset = true, "change", -3*time.Minute
		}, want: darktracetest.Untidiness{LateBreachShare: 0.2, MaxBreachDelay: 2 * time.Hour, IncidentDelay: 5 * time.Minute,
			IncidentWindow: darktracetest.WindowOnChangeTime, ActionLifecycle: true, ActionWindow: darktracetest.WindowOnChangeTime,
			ClockOffset: -3 * time.Minute}},
		{name: "realistic", mod: func(f *Appliance) { f.Realistic = true }, real: true, want: darktracetest.Untidiness{MaxBreachDelay: 3 * time.Hour}},
		{name: "share above 1", mod: func(f *Appliance) { f.LateBreaches = 1.5 }, errMsg: "--late-breaches"},
		{name: "bad incident window", mod: func(f *Appliance) { f.IncidentWindow = "created" }, errMsg: "--incident-window"},
		{name: "bad action window", mod: func(f *Appliance) { f.ActionWindow = "expires" }, errMsg: "--action-window"},
		{name: "negative delay", mod: func(f *Appliance) { f.IncidentDelay = -time.Minute }, errMsg: "--incident-delay"},
		{name: "for span", mod: func(f *Appliance) { f.Faults = []string{"date_error,for=10m", "maintenance,status=502,for=1h"} },
			want: darktracetest.Untidiness{MaxBreachDelay: 3 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := base()
			tt.mod(&f)
			opts, err := f.Options()
			if tt.errMsg != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errMsg) {
					t.Fatalf("got %v, want an error naming %s", err, tt.errMsg)
				}
				return
			}
			if err != nil || opts.Untidy != tt.want || opts.Realistic != tt.real {
				t.Fatalf("options: %+v realistic %v, %v; want %+v realistic %v", opts.Untidy, opts.Realistic, err, tt.want, tt.real)
			}
			for _, fault := range opts.Faults.Script {
				if fault.For <= 0 {
					t.Fatalf("fault %+v lost its span", fault)
				}
			}
		})
	}
}
