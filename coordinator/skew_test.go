package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/proto"
)

// TestPlansByApplianceClockWhatever the workers' clocks: a worker whose host clock is skewed
// records the appliance's offset from its own clock; the coordinator (on a correct clock, with
// an appliance on time) must neither stop planning for an hour (a worker an hour ahead records
// -1h) nor plan into the appliance's future (a worker ten minutes behind records +10m: those
// windows would be fetched before their events exist, and lost).
func TestPlansByApplianceClockWhateverTheWorkersClocks(t *testing.T) {
	for _, tc := range []struct {
		name       string
		workerSkew time.Duration
	}{
		{"worker an hour ahead", time.Hour},
		{"worker ten minutes behind", -10 * time.Minute},
		{"worker on time", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bustest.New(t)
			cfg := testConfig(t, "2024-05-07T20:00:00Z", "")
			host := time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC) // the coordinator's and the appliance's time
			clk := newClock(host)
			ctx := context.Background()
			rate, err := b.KV(ctx, proto.BucketRate)
			if err != nil {
				t.Fatal(err)
			}
			workerNow := host.Add(tc.workerSkew)
			data, err := proto.Encode(&proto.ClockOffset{V: proto.SchemaVersion, OffsetMS: host.Sub(workerNow).Milliseconds(), At: workerNow.UnixMilli()})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rate.Put(ctx, proto.ClockKey("darktrace"), data); err != nil {
				t.Fatal(err)
			}
			c, err := coordinator.New(ctx, b, b.JS, cfg, coordinator.Options{Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.PlanLane(ctx, lane(t, cfg)); err != nil {
				t.Fatal(err)
			}
			items := workItems(t, b)
			if len(items) == 0 {
				t.Fatal("nothing planned")
			}
			applianceNow := host.UnixMilli() // safety lag 0 in testConfig
			for _, it := range items {
				if it.End > applianceNow {
					t.Fatalf("slot %d ends at %s, after the appliance's now %s", it.Seq, proto.FormatMS(it.End), proto.FormatMS(applianceNow))
				}
			}
			if last := items[len(items)-1].End; last < applianceNow-time.Minute.Milliseconds() {
				t.Fatalf("planned up to %s, want up to the appliance's now %s", proto.FormatMS(last), proto.FormatMS(applianceNow))
			}
			// The appliance's time advances with the coordinator's clock from the observation
			// on, without a new one.
			clk.Advance(10 * time.Minute)
			if err := c.PlanLane(ctx, lane(t, cfg)); err != nil {
				t.Fatal(err)
			}
			items = workItems(t, b)
			if last := items[len(items)-1].End; last < applianceNow+9*time.Minute.Milliseconds() || last > applianceNow+10*time.Minute.Milliseconds() {
				t.Fatalf("planned up to %s ten minutes later, want up to %s", proto.FormatMS(last), proto.FormatMS(applianceNow+10*time.Minute.Milliseconds()))
			}
		})
	}
}
