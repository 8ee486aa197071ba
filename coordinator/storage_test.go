package coordinator_test

import (
	"bytes"
	"context"
	"fmt"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/proto"
)

// TestPlanningStopsWhenStorageIsNearlyFull (issue 9, "full and slow"): the KV buckets have no
// byte limit of their own; their limit is the JetStream storage. On an embedded server whose
// storage leaves the buckets 4 MiB beside the results stream's reservation, once they hold more
// than 90% of that the coordinator plans nothing new, logs once why, and its gauges say so; once
// the storage has room again it plans the due slots.
func TestPlanningStopsWhenStorageIsNearlyFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := bustest.NewWithMaxStore(t, 8<<30+4<<20) // the results stream reserves 8 GiB
	cfg := testConfig(t, "2024-05-07T00:00:00Z", "")
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	reg := prometheus.NewRegistry()
	logs := &logtest.Buffer{}
	c, err := coordinator.New(ctx, b, b.JS, cfg, coordinator.Options{Clock: clk, Registerer: reg,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	filler, err := b.KV(ctx, proto.BucketDedupe)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 { // 4 MiB: the buckets' whole room
		if _, err := filler.Put(ctx, fmt.Sprintf("filler%d", i), bytes.Repeat([]byte{'x'}, 512<<10)); err != nil {
			t.Fatalf("filling the storage: %v", err)
		}
	}
	ln := lane(t, cfg)
	paused := map[string]string{"stream": "jetstream_storage"}
	for range 2 {
		if err := c.PlanLane(ctx, ln); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	if items := workItems(t, b); len(items) != 0 {
		t.Fatalf("%d slots planned with the JetStream storage nearly full; want none", len(items))
	}
	if v := metricValue(t, reg, "dtfleet_coordinator_planning_paused", paused); v != 1 {
		t.Fatalf("dtfleet_coordinator_planning_paused{stream=jetstream_storage} = %v while the storage is nearly full; want 1", v)
	}
	if v := metricValue(t, reg, "dtfleet_coordinator_storage_used_ratio", nil); v < 0.9 {
		t.Fatalf("dtfleet_coordinator_storage_used_ratio = %v with the buckets' room filled; want at least 0.9", v)
	}
	const why = "the JetStream storage the KV buckets share is nearly full; planning stops"
	if n := strings.Count(logs.String(), why); n != 1 {
		t.Fatalf("%d log lines saying why planning stopped; want 1:\n%s", n, logs.String())
	}
	st, err := status.Read(ctx, b, cfg, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if p := st.PlanningPaused; p == nil || !strings.Contains(p.Reason, "storage") || p.RoomBytes != 4<<20 || p.UsedBytes < p.RoomBytes*9/10 {
		t.Fatalf("status shows planning paused as %+v; want the storage reason with 4 MiB of room over 90%% used", p)
	}

	s, err := b.JS.Stream(ctx, "KV_"+proto.BucketDedupe)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second) // the usage is read again at most once a second
	if err := c.PlanLane(ctx, ln); err != nil {
		t.Fatal(err)
	}
	if items := workItems(t, b); len(items) != 24 {
		t.Fatalf("%d slots planned once the storage has room; want 24", len(items))
	}
	if v := metricValue(t, reg, "dtfleet_coordinator_planning_paused", paused); v != 0 {
		t.Fatalf("dtfleet_coordinator_planning_paused{stream=jetstream_storage} = %v with room again; want 0", v)
	}
	if !strings.Contains(logs.String(), "the JetStream storage has room again; planning resumes") {
		t.Fatalf("no log line saying planning resumed:\n%s", logs.String())
	}
	if st, err := status.Read(ctx, b, cfg, clk.Now()); err != nil || st.PlanningPaused != nil {
		t.Fatalf("status after planning resumed: paused %+v, err %v; want not paused", st.PlanningPaused, err)
	}
}
