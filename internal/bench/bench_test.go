package bench

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseScenarios(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"backfill", []string{"backfill"}, ""},
		{"throughput, memory", []string{"throughput", "memory"}, ""},
		{"all", Scenarios, ""},
		{"backfill,all", Scenarios, ""},
		{"backfil", nil, `unknown scenario "backfil"`},
	}
	for _, tt := range tests {
		got, err := ParseScenarios(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseScenarios(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseScenarios(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestMaxPerSecond(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		var ts []time.Time
		for _, m := range ms {
			ts = append(ts, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return ts
	}
	tests := []struct {
		name string
		ts   []time.Time
		want int
	}{
		{"none", nil, 0},
		{"one", at(5), 1},
		{"a second apart", at(0, 1000, 2000), 1},
		{"burst", at(0, 10, 20, 999, 1500), 4},
		{"out of order", at(1500, 20, 999, 0, 10), 4},
	}
	for _, tt := range tests {
		if got := maxPerSecond(tt.ts); got != tt.want {
			t.Errorf("%s: maxPerSecond = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for q, want := range map[float64]float64{0: 1, 0.5: 5, 0.99: 10, 1: 10} {
		if got := quantile(xs, q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
}
