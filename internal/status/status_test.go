package status_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// provisioned returns a configuration and a provisioned embedded bus for it.
func provisioned(t *testing.T) (*config.Config, *bus.Bus) {
	t.Helper()
	env := fleettest.NewEnv(t, 1)
	b, err := fleet.Connect(context.Background(), env.Config, fleet.AllRoles, "none", fleettest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return env.Config, b
}

func put(t *testing.T, b *bus.Bus, bucket, key string, v any) {
	t.Helper()
	kv, err := b.KV(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

// TestRead: the checkpoints, leases, failure records and heartbeats on the bus are what Read
// reports, and CaughtUp follows the delivery cursors.
func TestRead(t *testing.T) {
	cfg, b := provisioned(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st, err := status.Read(context.Background(), b, cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Lanes) != len(cfg.Lanes()) || len(st.Failed) != 0 || len(st.Workers) != 0 || st.Coordinator != "" {
		t.Fatalf("a fresh bus: %+v", st)
	}
	if st.CaughtUp(now) {
		t.Error("a fresh bus is caught up")
	}
	end := now.Add(-time.Hour)
	for _, ln := range cfg.Lanes() {
		key := proto.LaneKey(ln.Input, ln.Service)
		put(t, b, proto.BucketPlan, key, &proto.Plan{V: 1, NextSeq: 11, Cursor: end.UnixMilli()})
		put(t, b, proto.BucketDelivered, key, &proto.Delivery{V: 1, Seq: 7, End: end.UnixMilli(), Events: 5, Dups: 1})
	}
	put(t, b, proto.BucketLeases, proto.LeaseCoordinator, &proto.Lease{V: 1, Holder: "coord-1"})
	put(t, b, proto.BucketFailed, "f1", &proto.Failure{V: 1, Input: "darktrace", Service: config.ServiceAntigena, Seq: 3,
		Start: end.Add(-time.Hour).UnixMilli(), End: end.UnixMilli(), Error: "INPUT ERROR\nmore"})
	put(t, b, proto.BucketWorkers, "w2", &proto.Heartbeat{V: 1, ID: "w2"})
	put(t, b, proto.BucketWorkers, "w1", &proto.Heartbeat{V: 1, ID: "w1", Slots: 4})
	st, err = status.Read(context.Background(), b, cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range st.Lanes {
		if l.PlannedSeq != 10 || l.DeliveredSeq != 7 || l.Backlog != 3 || l.Events != 5 || l.Duplicates != 1 {
			t.Errorf("lane %s: %+v", l.Service, l)
		}
		if !l.Snapshot && l.Lag != "1h0m0s" {
			t.Errorf("lane %s: lag %q, want 1h0m0s", l.Service, l.Lag)
		}
	}
	if st.Coordinator != "coord-1" || len(st.Failed) != 1 || st.Failed[0].Seq != 3 || len(st.Workers) != 2 || st.Workers[0].ID != "w1" {
		t.Errorf("status: %+v", st)
	}
	if !st.CaughtUp(end) || st.CaughtUp(now) {
		t.Errorf("CaughtUp(end) = %v, CaughtUp(now) = %v; want true, false", st.CaughtUp(end), st.CaughtUp(now))
	}
	if got, want := st.Events(), uint64(5*len(cfg.Lanes())); got != want {
		t.Errorf("Events() = %d, want %d", got, want)
	}
	var out strings.Builder
	status.Print(&out, st)
	for _, want := range []string{"coordinator leader: coord-1", "failed slots (retried automatically when a next retry is shown; dtfleet replay replays one now): 1",
		"INPUT ERROR; next retry: none (replay it once the cause is fixed)\n", "workers seen: 2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Print lacks %q:\n%s", want, out.String())
		}
	}
}

// listFails is a bucket whose key listing fails, as it does when NATS is unreachable mid-read.
type listFails struct{ jetstream.KeyValue }

func (listFails) ListKeys(context.Context, ...jetstream.WatchOpt) (jetstream.KeyLister, error) {
	return nil, errors.New("nats: timeout")
}

// failingSource serves the real buckets except bucket, whose listing fails.
type failingSource struct {
	b      *bus.Bus
	bucket string
}

func (s failingSource) KV(ctx context.Context, name string) (jetstream.KeyValue, error) {
	kv, err := s.b.KV(ctx, name)
	if err != nil || name != s.bucket {
		return kv, err
	}
	return listFails{kv}, nil
}

// TestReadReportsListErrors: a bucket whose keys cannot be listed fails the Read, naming the
// bucket, instead of reporting no failed slots or no workers.
func TestReadReportsListErrors(t *testing.T) {
	cfg, b := provisioned(t)
	for _, bucket := range []string{proto.BucketFailed, proto.BucketWorkers} {
		t.Run(bucket, func(t *testing.T) {
			st, err := status.Read(context.Background(), failingSource{b, bucket}, cfg, time.Now())
			if err == nil || !strings.Contains(err.Error(), bucket) || !strings.Contains(err.Error(), "nats: timeout") {
				t.Fatalf("Read = %+v, %v; want an error naming %s", st, err, bucket)
			}
		})
	}
}

// TestReadCancelled: a read cut short by its context is an error, not a short list.
func TestReadCancelled(t *testing.T) {
	cfg, b := provisioned(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := status.Read(ctx, b, cfg, time.Now()); err == nil {
		t.Fatal("Read with a cancelled context returned no error")
	}
}

// TestLagOnTheAppliancesClock: lag is measured from the appliance's now (the host's plus the
// offset the workers recorded), and is never negative: an appliance 90 s ahead whose windows
// end after the host's now, and a snapshot period that ends after its poll, show no lag.
func TestLagOnTheAppliancesClock(t *testing.T) {
	cfg, b := provisioned(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	lagOf := func(st *status.Status, service string) string {
		for _, l := range st.Lanes {
			if l.Service == service {
				return l.Lag
			}
		}
		t.Fatalf("no lane %s", service)
		return ""
	}
	key := proto.LaneKey("darktrace", config.ServiceModelBreaches)
	put(t, b, proto.BucketDelivered, key, &proto.Delivery{V: proto.SchemaVersion, Seq: 3, End: now.Add(60 * time.Second).UnixMilli()})
	put(t, b, proto.BucketDelivered, proto.LaneKey("darktrace", config.ServiceStatus),
		&proto.Delivery{V: proto.SchemaVersion, Seq: 3, End: now.Add(2 * time.Minute).UnixMilli()})
	st, err := status.Read(context.Background(), b, cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := lagOf(st, config.ServiceModelBreaches); got != "0s" {
		t.Errorf("lag of a window ending after the host's now = %q; want 0s", got)
	}
	if got := lagOf(st, config.ServiceStatus); got != "0s" {
		t.Errorf("lag of a snapshot period ending after its poll = %q; want 0s", got)
	}
	// The recording worker writes its own clock's time (At), which the bucket stamps on the
	// server's: a worker in step, one an hour ahead and one ten minutes behind all record an
	// appliance 90 s ahead, and the lag is the same whatever the worker's clock said.
	for _, skew := range []time.Duration{0, time.Hour, -10 * time.Minute} {
		at := time.Now().Add(skew)
		put(t, b, proto.BucketRate, proto.ClockKey("darktrace"), &proto.ClockOffset{V: proto.SchemaVersion,
			OffsetMS: (90*time.Second - skew).Milliseconds(), At: at.UnixMilli()})
		if st, err = status.Read(context.Background(), b, cfg, now); err != nil {
			t.Fatal(err)
		}
		if got := lagOf(st, config.ServiceModelBreaches); got != "30s" {
			t.Errorf("worker clock %v: lag on an appliance 90 s ahead of a window ending 60 s after the host's now = %q; want 30s", skew, got)
		}
	}
}
