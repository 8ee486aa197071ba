package main

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
	base := func() simulateFlags {
		return simulateFlags{days: 1, publicToken: "p", privateToken: "q", maxBreachDelay: 3 * time.Hour, incidentWindow: "event", actionWindow: "event"}
	}
	tests := []struct {
		name   string
		mod    func(*simulateFlags)
		want   darktracetest.Untidiness
		real   bool
		errMsg string
	}{
		{name: "tidy by default", mod: func(*simulateFlags) {}, want: darktracetest.Untidiness{MaxBreachDelay: 3 * time.Hour}},
		{name: "every knob", mod: func(f *simulateFlags) {
			f.lateBreaches, f.maxBreachDelay, f.incidentDelay, f.incidentWindow = 0.2, 2*time.Hour, 5*time.Minute, "change"
			f.actionLifecycle, f.actionWindow, f.clockOffset = true, "change", -3*time.Minute
		}, want: darktracetest.Untidiness{LateBreachShare: 0.2, MaxBreachDelay: 2 * time.Hour, IncidentDelay: 5 * time.Minute,
			IncidentWindow: darktracetest.WindowOnChangeTime, ActionLifecycle: true, ActionWindow: darktracetest.WindowOnChangeTime,
			ClockOffset: -3 * time.Minute}},
		{name: "realistic", mod: func(f *simulateFlags) { f.realistic = true }, real: true, want: darktracetest.Untidiness{MaxBreachDelay: 3 * time.Hour}},
		{name: "share above 1", mod: func(f *simulateFlags) { f.lateBreaches = 1.5 }, errMsg: "--late-breaches"},
		{name: "bad incident window", mod: func(f *simulateFlags) { f.incidentWindow = "created" }, errMsg: "--incident-window"},
		{name: "bad action window", mod: func(f *simulateFlags) { f.actionWindow = "expires" }, errMsg: "--action-window"},
		{name: "negative delay", mod: func(f *simulateFlags) { f.incidentDelay = -time.Minute }, errMsg: "--incident-delay"},
		{name: "for span", mod: func(f *simulateFlags) { f.faults = []string{"date_error,for=10m", "maintenance,status=502,for=1h"} },
			want: darktracetest.Untidiness{MaxBreachDelay: 3 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := base()
			tt.mod(&f)
			opts, err := f.options()
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
