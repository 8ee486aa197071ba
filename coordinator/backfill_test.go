package coordinator_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/proto"
)

// TestBackfillIsLoggedOnce: a lane that starts a week behind logs one backfill line with its
// slots, the pace the workers' pacing records promise and the knob that binds; it waits for a
// worker's measurement (or 30 s), and never repeats.
func TestBackfillIsLoggedOnce(t *testing.T) {
	cases := []struct {
		name   string
		pace   *proto.Pace
		wait   time.Duration // the clock advances this much before the second planning
		want   []string
		before bool // the line is there after the first planning already
	}{
		{name: "ceiling binds", pace: &proto.Pace{V: 1, Worker: "w1", Limit: 4, Max: 64, FloorMS: 200, Ceiling: 10},
			want: []string{"Backfill of 168 slots starting at about 10 requests/s", "requests_per_second"}, before: true},
		{name: "ceiling binds, limit in its slow start", pace: &proto.Pace{V: 1, Worker: "w1", Limit: 1, Max: 64, FloorMS: 200, Ceiling: 10},
			want: []string{"Backfill of 168 slots starting at about 10 requests/s", "requests_per_second"}, before: true},
		{name: "concurrency binds", pace: &proto.Pace{V: 1, Worker: "w1", Limit: 8, Max: 8, FloorMS: 200, Ceiling: 1000},
			want: []string{"Backfill of 168 slots starting at about 40 requests/s", "workers.concurrency"}, before: true},
		{name: "no measurement yet", wait: 31 * time.Second,
			want: []string{"Backfill of 168 slots starting; no worker has measured the appliance yet"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bustest.New(t)
			cfg := testConfig(t, "2024-05-01T00:00:00Z", "")
			clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
			var logs bytes.Buffer
			co, err := coordinator.New(context.Background(), b, b.JS, cfg, coordinator.Options{Clock: clk, MaxSlotsPerStep: 50,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if c.pace != nil {
				c.pace.At = clk.Now().UnixMilli()
				put(t, b, proto.PaceKey("darktrace", c.pace.Worker), c.pace)
			}
			ln := lane(t, cfg)
			if err := co.PlanLane(context.Background(), ln); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "Backfill of"); got != c.before {
				t.Fatalf("backfill line after the first planning: %v, want %v:\n%s", got, c.before, logs.String())
			}
			clk.Advance(c.wait + time.Second)
			for range 3 {
				if err := co.PlanLane(context.Background(), ln); err != nil {
					t.Fatal(err)
				}
				clk.Advance(2 * time.Second)
			}
			out := logs.String()
			if n := strings.Count(out, "Backfill of"); n != 1 {
				t.Fatalf("%d backfill lines, want 1:\n%s", n, out)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("the backfill line lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// put writes a pacing record into the rate bucket.
func put(t *testing.T, b *bus.Bus, key string, p *proto.Pace) {
	t.Helper()
	kv, err := b.KV(context.Background(), proto.BucketRate)
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}
