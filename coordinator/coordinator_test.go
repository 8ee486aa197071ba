package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T, start string, extra string) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
outputs: {console_1: {type: console}}
coordinator: {safety_lag_in_seconds: 0, max_slots_ahead: 100000, max_backlog_in_mb: 1000000, lease_ttl_in_seconds: 2}
inputs:
  darktrace:
    credentials: {public_token: pub, private_token: priv, instance: "https://dt.example"}
    services:
      modelbreaches: {start_time_in_utc_format: %q%s}
`, start, extra)
	cfg, err := config.Parse([]byte(y), config.LoadOptions{Now: func() time.Time { return time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func lane(t *testing.T, cfg *config.Config) config.Lane {
	t.Helper()
	for _, ln := range cfg.Lanes() {
		if ln.Service == config.ServiceModelBreaches {
			return ln
		}
	}
	t.Fatal("no modelbreaches lane")
	return config.Lane{}
}

func newClock(t time.Time) *clockwork.FakeClock { return clockwork.NewFakeClockAt(t) }

// metricValue is the value of the gauge or counter name with labels in reg (0 when absent).
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metric
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// workItems reads every work item in the work stream, in stream order.
func workItems(t *testing.T, b *bus.Bus) []proto.WorkItem {
	t.Helper()
	ctx := context.Background()
	s, err := b.JS.Stream(ctx, proto.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []proto.WorkItem
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var it proto.WorkItem
		if err := proto.Decode(m.Data, &it); err != nil {
			t.Fatal(err)
		}
		out = append(out, it)
	}
	return out
}

// workItemsOf is workItems of one service.
func workItemsOf(t *testing.T, b *bus.Bus, service string) []proto.WorkItem {
	t.Helper()
	var out []proto.WorkItem
	for _, it := range workItems(t, b) {
		if it.Service == service {
			out = append(out, it)
		}
	}
	return out
}

func plan(t *testing.T, b *bus.Bus, key string) proto.Plan {
	t.Helper()
	kv, err := b.KV(context.Background(), proto.BucketPlan)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var p proto.Plan
	if err := proto.Decode(e.Value(), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPlanBackfillContiguous(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	cfg := testConfig(t, "2024-05-01T00:00:00Z", "")
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	c, err := coordinator.New(context.Background(), b, b.JS, cfg, coordinator.Options{Clock: clk, MaxSlotsPerStep: 50})
	if err != nil {
		t.Fatal(err)
	}
	ln := lane(t, cfg)
	if err := c.PlanLane(context.Background(), ln); err != nil {
		t.Fatal(err)
	}
	items := workItems(t, b)
	// 7 days of 60-minute windows, then one partial window of 30 s (the request period is 60 s,
	// so the partial one is not due yet).
	if len(items) != 7*24 {
		t.Fatalf("planned %d slots, want %d", len(items), 7*24)
	}
	start := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for i, it := range items {
		if it.Seq != uint64(i+1) {
			t.Fatalf("slot %d has seq %d", i, it.Seq)
		}
		if it.Start != start+int64(i)*3600_000 || it.End != it.Start+3600_000 {
			t.Fatalf("slot %d window %d-%d", i, it.Start, it.End)
		}
		if it.SlotID != proto.SlotID("darktrace", "modelbreaches", it.Start, it.End, 1, "e1") {
			t.Fatalf("slot %d id %s is not deterministic", i, it.SlotID)
		}
	}
	p := plan(t, b, "darktrace.modelbreaches")
	if len(p.Pending) != 0 || p.NextSeq != 7*24+1 {
		t.Fatalf("plan after backfill: pending %d next %d", len(p.Pending), p.NextSeq)
	}
	// A minute later the partial window is due; planning again adds exactly it.
	clk.Advance(time.Minute)
	if err := c.PlanLane(context.Background(), ln); err != nil {
		t.Fatal(err)
	}
	items = workItems(t, b)
	if len(items) != 7*24+1 || items[len(items)-1].Start != start+7*24*3600_000 {
		t.Fatalf("after a minute: %d slots, last %+v", len(items), items[len(items)-1])
	}
}

// failingPublisher stores reservations but fails to publish after n messages, like a crash
// between the two steps of planning.
type failingPublisher struct {
	js   jetstream.JetStream
	left atomic.Int64
}

func (f *failingPublisher) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	if f.left.Add(-1) < 0 {
		return nil, errors.New("injected publish failure")
	}
	return f.js.PublishMsgAsync(m, opts...)
}

func TestPlanCrashBetweenReserveAndPublish(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	cfg := testConfig(t, "2024-05-07T00:00:00Z", "")
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	fp := &failingPublisher{js: b.JS}
	fp.left.Store(10)
	c1, err := coordinator.New(context.Background(), b, fp, cfg, coordinator.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ln := lane(t, cfg)
	if err := c1.PlanLane(context.Background(), ln); err == nil {
		t.Fatal("planning with a failing publisher succeeded")
	}
	p := plan(t, b, "darktrace.modelbreaches")
	if len(p.Pending) != 24 {
		t.Fatalf("after the crash %d slots are pending, want 24", len(p.Pending))
	}
	// The clock moves on (a restart later); a new coordinator must republish the same slots,
	// not recompute them, and add only the newly due ones.
	clk.Advance(2 * time.Hour)
	c2, err := coordinator.New(context.Background(), b, b.JS, cfg, coordinator.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.PlanLane(context.Background(), ln); err != nil {
		t.Fatal(err)
	}
	items := workItems(t, b)
	seen := map[uint64]int{}
	for _, it := range items {
		seen[it.Seq]++
	}
	if len(items) != 26 {
		t.Fatalf("work stream holds %d items, want 26 (10 before the crash, deduplicated on republish, + 16 + 2 new)", len(items))
	}
	for seq := uint64(1); seq <= 26; seq++ {
		if seen[seq] != 1 {
			t.Fatalf("seq %d published %d times", seq, seen[seq])
		}
	}
}

func TestResetOnStartTimeChange(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	cfg := testConfig(t, "2024-05-07T00:00:00Z", "")
	c, _ := coordinator.New(context.Background(), b, b.JS, cfg, coordinator.Options{Clock: clk})
	if err := c.PlanLane(context.Background(), lane(t, cfg)); err != nil {
		t.Fatal(err)
	}
	cfg2 := testConfig(t, "2024-05-06T12:00:00Z", "")
	c2, _ := coordinator.New(context.Background(), b, b.JS, cfg2, coordinator.Options{Clock: clk})
	if err := c2.PlanLane(context.Background(), lane(t, cfg2)); err != nil {
		t.Fatal(err)
	}
	p := plan(t, b, "darktrace.modelbreaches")
	if p.Epoch != 2 || p.StartConfig != "2024-05-06T12:00:00Z" {
		t.Fatalf("plan after reset: epoch %d start %q", p.Epoch, p.StartConfig)
	}
	items := workItems(t, b)
	if len(items) != 24+36 {
		t.Fatalf("%d slots, want 60 (24 before, 36 after the reset)", len(items))
	}
	last := items[len(items)-1]
	if last.Seq != 60 || last.Epoch != 2 || items[24].Start != time.Date(2024, 5, 6, 12, 0, 0, 0, time.UTC).UnixMilli() {
		t.Fatalf("sequence must continue across the reset: %+v / %+v", items[24], last)
	}
}

func TestBacklogLimit(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	cfg := testConfig(t, "2024-05-01T00:00:00Z", "")
	cfg.Coordinator.MaxSlotsAhead = 10
	c, _ := coordinator.New(context.Background(), b, b.JS, cfg, coordinator.Options{Clock: clk})
	if err := c.PlanLane(context.Background(), lane(t, cfg)); err != nil {
		t.Fatal(err)
	}
	if n := len(workItems(t, b)); n != 10 {
		t.Fatalf("planned %d slots with max_slots_ahead 10", n)
	}
}

// TestBacklogBytesLimit: the backlog is bounded in bytes too, in slots of the size the lane
// delivered so far, and before its first delivery by a fixed number of slots.
func TestBacklogBytesLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		d        *proto.Delivery // the lane's delivery checkpoint, nil for none
		mb       int
		wantPlan int
	}{
		{"nothing delivered yet", nil, 128, 16},
		{"part of the first slot delivered", &proto.Delivery{V: proto.SchemaVersion, ResultBytes: 32 << 20}, 128, 4},
		{"32 MB slots under a 128 MB limit", &proto.Delivery{V: proto.SchemaVersion, Seq: 10, ResultBytes: 10 * 32 << 20}, 128, 4},
		{"huge slots still get two ahead", &proto.Delivery{V: proto.SchemaVersion, Seq: 10, ResultBytes: 10 * 1 << 30}, 128, 2},
		{"small slots: the slot limit rules", &proto.Delivery{V: proto.SchemaVersion, Seq: 10, ResultBytes: 10 * 1 << 10}, 128, 100},
		{"empty slots: no byte limit", &proto.Delivery{V: proto.SchemaVersion, Seq: 10}, 128, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := bustest.New(t)
			clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
			cfg := testConfig(t, "2024-05-01T00:00:00Z", "")
			cfg.Coordinator.MaxSlotsAhead, cfg.Coordinator.MaxBacklogInMB = 100, tc.mb
			if tc.d != nil {
				kv, err := b.KV(context.Background(), proto.BucketDelivered)
				if err != nil {
					t.Fatal(err)
				}
				data, _ := proto.Encode(tc.d)
				if _, err := kv.Put(context.Background(), "darktrace.modelbreaches", data); err != nil {
					t.Fatal(err)
				}
			}
			c, _ := coordinator.New(context.Background(), b, b.JS, cfg, coordinator.Options{Clock: clk})
			if err := c.PlanLane(context.Background(), lane(t, cfg)); err != nil {
				t.Fatal(err)
			}
			if n := len(workItems(t, b)); n != tc.wantPlan {
				t.Fatalf("planned %d slots, want %d", n, tc.wantPlan)
			}
		})
	}
}

func TestReplay(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	cfg := testConfig(t, "2024-05-07T00:00:00Z", "")
	c, _ := coordinator.New(context.Background(), b, b.JS, cfg, coordinator.Options{Clock: clk})
	ln := lane(t, cfg)
	if err := c.PlanLane(context.Background(), ln); err != nil {
		t.Fatal(err)
	}
	from := time.Date(2024, 5, 7, 3, 0, 0, 0, time.UTC)
	items, err := coordinator.Replay(context.Background(), b, b.JS, ln, from, from.Add(150*time.Minute), coordinator.ReplayOptions{Force: true, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 || items[0].Seq != 25 || !items[0].Force || items[2].End != from.Add(150*time.Minute).UnixMilli() {
		t.Fatalf("replay items: %+v", items)
	}
	if n := len(workItems(t, b)); n != 27 {
		t.Fatalf("work stream holds %d items after the replay, want 27", n)
	}
	// Replaying twice gives new slot IDs: both are published.
	if _, err := coordinator.Replay(context.Background(), b, b.JS, ln, from, from.Add(time.Hour), coordinator.ReplayOptions{Clock: clk}); err != nil {
		t.Fatal(err)
	}
	if n := len(workItems(t, b)); n != 28 {
		t.Fatalf("work stream holds %d items after the second replay, want 28", n)
	}
}

func TestOneLeader(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	cfg := testConfig(t, "2024-05-07T00:00:00Z", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var runs []chan error
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	for i := 0; i < 2; i++ {
		c, err := coordinator.New(ctx, b, b.JS, cfg, coordinator.Options{ID: fmt.Sprintf("c%d", i), Tick: 20 * time.Millisecond, Registerer: regs[i]})
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan error, 1)
		go func() { ch <- c.Run(ctx) }()
		runs = append(runs, ch)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		items := workItems(t, b)
		seqs := map[string]int{}
		n := 0
		for _, it := range items {
			k := fmt.Sprint(it.Service, it.Seq)
			seqs[k]++
			if it.Service == config.ServiceModelBreaches {
				n++
			}
			if seqs[k] > 1 {
				t.Fatalf("seq %d planned twice", it.Seq)
			}
		}
		// Never two leaders at once, as their gauges see it.
		leaders := 0.0
		for _, reg := range regs {
			leaders += metricValue(t, reg, "dtfleet_role_leader", map[string]string{"role": "coordinator", "lane": "darktrace.modelbreaches"})
		}
		if leaders > 1 {
			t.Fatalf("%v coordinators report leading the lane", leaders)
		}
		// What the coordinators counted as planned is at most what the stream holds (a slot is
		// counted once its reservation is confirmed, after it was published; a leader's
		// republished reservations are not counted again), and it grows with the plan.
		planned := 0.0
		for _, reg := range regs {
			planned += metricValue(t, reg, "dtfleet_coordinator_slots_planned_total", map[string]string{"input": "darktrace", "service": "modelbreaches"})
		}
		if after := len(workItemsOf(t, b, config.ServiceModelBreaches)); planned > float64(after) {
			t.Fatalf("dtfleet_coordinator_slots_planned_total sums to %v with %d modelbreaches items in the stream", planned, after)
		}
		if n >= 24 && leaders == 1 && planned >= 24 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d slots planned", len(items))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	for _, ch := range runs {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeliveryWakesALimitedLane: a lane at its backlog limit is planned again as soon as its
// delivery checkpoint moves. The clock is fake and never advanced, so neither the tick nor the
// limited recheck fires: only the delivery can bring the new slots.
func TestDeliveryWakesALimitedLane(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	cfg := testConfig(t, "2024-05-07T00:00:00Z", "")
	cfg.Coordinator.MaxSlotsAhead = 3
	c, err := coordinator.New(context.Background(), b, b.JS, cfg, coordinator.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitItems := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for len(workItems(t, b)) != n {
			if time.Now().After(deadline) {
				t.Fatalf("%d slots planned, want %d", len(workItems(t, b)), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitItems(3)
	kv, err := b.KV(context.Background(), proto.BucketDelivered)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := proto.Encode(&proto.Delivery{V: proto.SchemaVersion, Seq: 2})
	if _, err := kv.Put(context.Background(), "darktrace.modelbreaches", data); err != nil {
		t.Fatal(err)
	}
	waitItems(5)
}
