package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/dtfleet/dtfleet/internal/bench"
)

// TestBenchJSON runs a tiny bench and checks the shape of its JSON report. It asserts nothing
// about timings: those live only in dtfleet bench and BENCHMARKS.md.
func TestBenchJSON(t *testing.T) {
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"bench", "--json", "--dir", t.TempDir(), "--scenarios", "backfill,throughput,freshness",
		"--slots", "6", "--baseline-slots", "3", "--events-per-slot", "4", "--latency", "1ms", "--concurrency", "4",
		"--throughput-slots", "2", "--throughput-events-per-slot", "50", "--event-size", "600",
		"--live-duration", "2s", "--period", "1s", "--live-events-per-hour", "7200"})
	if err := root.Execute(); err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if rep.Machine.CPUs <= 0 || rep.Machine.GoVersion == "" {
		t.Errorf("machine: %+v", rep.Machine)
	}
	if rep.Backfill == nil || rep.Throughput == nil || rep.Freshness == nil {
		t.Fatalf("missing scenarios:\n%s", out.String())
	}
	if rep.Memory != nil || rep.Scale != nil {
		t.Errorf("scenarios that were not asked for ran")
	}
	b := rep.Backfill
	if !b.BaselineExtrapolated || b.Baseline.Slots != 3 || b.Fleet.Slots != 6 || b.Baseline.Concurrency != 1 {
		t.Errorf("backfill: %+v", b)
	}
	if b.Speedup <= 0 || b.BaselineWallSeconds <= 0 {
		t.Errorf("backfill figures: %+v", b)
	}
	for _, r := range []bench.RunResult{b.Fleet, b.Baseline, *rep.Throughput} {
		if r.WallSeconds <= 0 || r.Events <= 0 || r.EventBytes <= 0 || r.Requests <= 0 || r.EventsPerSecond <= 0 ||
			r.MBPerSecond <= 0 || r.CPUSeconds <= 0 || r.PeakRSSMB <= 0 || r.PeakHeapMB <= 0 {
			t.Errorf("%s: a figure is not positive: %+v", r.Name, r)
		}
		// The slot after the last one may deliver its late-created breaches before the run's end
		// is read (bench.RunResult.Events); fewer than expected is a loss.
		if r.Events < r.Expected || r.Expected <= 0 {
			t.Errorf("%s: %d events delivered, %d expected", r.Name, r.Events, r.Expected)
		}
	}
	if f := rep.Freshness; f.PeriodSeconds != 1 || f.Run.WallSeconds <= 0 {
		t.Errorf("freshness: %+v", f)
	}
}
