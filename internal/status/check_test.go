package status

import (
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	lane := func(service string, until time.Time, snapshot bool) Lane {
		return Lane{Input: "dt", Service: service, DeliveredUntil: until, Snapshot: snapshot}
	}
	fresh, old := now.Add(-10*time.Minute), now.Add(-3*time.Hour)
	tests := []struct {
		name string
		st   Status
		want int
		n    int // reasons
	}{
		{"healthy", Status{Coordinator: "c1", Lanes: []Lane{lane("mb", fresh, false), lane("status", time.Time{}, true)}}, CheckHealthy, 0},
		{"lagging", Status{Coordinator: "c1", Lanes: []Lane{lane("mb", old, false), lane("ai", fresh, false)}}, CheckLagging, 1},
		{"nothing delivered", Status{Coordinator: "c1", Lanes: []Lane{lane("mb", time.Time{}, false)}}, CheckLagging, 1},
		{"no coordinator", Status{Lanes: []Lane{lane("mb", fresh, false)}}, CheckLagging, 1},
		{"failed wins over lagging", Status{Coordinator: "c1", Lanes: []Lane{lane("mb", old, false)}, Failed: []FailedSlot{{}}}, CheckFailed, 2},
	}
	for _, tt := range tests {
		tt.st.Now = now
		code, reasons := Check(&tt.st, time.Hour)
		if code != tt.want || len(reasons) != tt.n {
			t.Errorf("%s: Check = %d %q, want %d with %d reasons", tt.name, code, reasons, tt.want, tt.n)
		}
	}
}

func TestEnvOrPlaceholder(t *testing.T) {
	t.Setenv("DTFLEET_TEST_SET", "value")
	if v, ok := EnvOrPlaceholder("DTFLEET_TEST_SET"); !ok || v != "value" {
		t.Errorf("set variable: %q %v", v, ok)
	}
	if v, ok := EnvOrPlaceholder("DTFLEET_TEST_SURELY_UNSET"); !ok || v == "" {
		t.Errorf("unset variable: %q %v", v, ok)
	}
}
