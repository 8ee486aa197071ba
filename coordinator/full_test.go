package coordinator_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/proto"
)

// fixedUsage reports the results stream holding used of 1000 bytes.
type fixedUsage struct{ used, reads atomic.Uint64 }

func (u *fixedUsage) Usage(context.Context, string) (uint64, uint64, error) {
	u.reads.Add(1)
	return u.used.Load(), 1000, nil
}

// TestPlanningStopsWhenResultsAreNearlyFull (issue 9, row 5): with the results stream at 95% of
// its MaxBytes the coordinator plans nothing new and its gauge says why; once the stream has room
// again it plans the due slots and the gauge drops.
func TestPlanningStopsWhenResultsAreNearlyFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := bustest.New(t)
	cfg := testConfig(t, "2024-05-07T00:00:00Z", "")
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	usage := &fixedUsage{}
	usage.used.Store(950)
	reg := prometheus.NewRegistry()
	c, err := coordinator.New(ctx, b, b.JS, cfg, coordinator.Options{Clock: clk, Usage: usage, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln := lane(t, cfg)
	paused := map[string]string{"stream": proto.StreamResults}
	if err := c.PlanLane(ctx, ln); err != nil {
		t.Fatal(err)
	}
	if items := workItems(t, b); len(items) != 0 {
		t.Fatalf("%d slots planned into a nearly full results stream; want none", len(items))
	}
	if v := metricValue(t, reg, "dtfleet_coordinator_planning_paused", paused); v != 1 {
		t.Fatalf("dtfleet_coordinator_planning_paused = %v while the stream is nearly full; want 1", v)
	}
	// A second lane's check within the second reuses the reading: one stream-info request per
	// second serves every lane, however often the leader plans.
	if err := c.PlanLane(ctx, ln); err != nil {
		t.Fatal(err)
	}
	if n := usage.reads.Load(); n != 1 {
		t.Fatalf("the results stream's usage was read %d times within a second; want 1", n)
	}
	usage.used.Store(100)
	clk.Advance(time.Second) // the usage is read again at most once a second
	if err := c.PlanLane(ctx, ln); err != nil {
		t.Fatal(err)
	}
	if items := workItems(t, b); len(items) != 24 {
		t.Fatalf("%d slots planned once the stream has room; want 24", len(items))
	}
	if v := metricValue(t, reg, "dtfleet_coordinator_planning_paused", paused); v != 0 {
		t.Fatalf("dtfleet_coordinator_planning_paused = %v with room again; want 0", v)
	}
}

// TestJetStreamUsageReadsTheStream: the JetStream adapter reports the results stream's real
// MaxBytes, so the default check compares against the provisioned limit.
func TestJetStreamUsageReadsTheStream(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	used, limit, err := coordinator.JetStreamUsage{JS: b.JS}.Usage(context.Background(), proto.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	if limit == 0 || used > limit {
		t.Fatalf("usage %d of %d; want a bounded stream", used, limit)
	}
}
