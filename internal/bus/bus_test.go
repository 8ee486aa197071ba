package bus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSettingsFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		coord, ship, hrs  int
		wantLease, wantDD time.Duration
	}{
		{"equal", 10, 10, 168, 10 * time.Second, 168 * time.Hour},
		{"coordinator longer", 30, 10, 1, 30 * time.Second, time.Hour},
		{"shipper longer", 5, 20, 24, 20 * time.Second, 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{
				Coordinator: config.Coordinator{LeaseTTLInSeconds: tc.coord},
				Shipper:     config.Shipper{LeaseTTLInSeconds: tc.ship, DedupeTTLInHours: tc.hrs},
			}
			got := bus.SettingsFor(cfg)
			if got.LeaseTTL != tc.wantLease || got.DedupeTTL != tc.wantDD {
				t.Errorf("SettingsFor = %+v, want lease %s dedupe %s", got, tc.wantLease, tc.wantDD)
			}
		})
	}
}

// TestProvisionBucketTTLsFollowSettings: the leases and dedupe buckets get exactly the TTLs of the
// settings, which is what the roles' lease arithmetic relies on; provisioning again with other
// settings updates them (an operator changing a TTL), and zero settings are refused instead of
// falling back to a hidden default.
func TestProvisionBucketTTLsFollowSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := bustest.NewWith(t, bus.Settings{LeaseTTL: 3 * time.Second, DedupeTTL: 2 * time.Hour})
	check := func(lease, dedupe time.Duration) {
		t.Helper()
		for bucket, want := range map[string]time.Duration{proto.BucketLeases: lease, proto.BucketDedupe: dedupe} {
			kv, err := b.KV(ctx, bucket)
			if err != nil {
				t.Fatal(err)
			}
			st, err := kv.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.TTL() != want {
				t.Errorf("bucket %s TTL = %s, want %s", bucket, st.TTL(), want)
			}
		}
	}
	check(3*time.Second, 2*time.Hour)
	if err := b.Provision(ctx, bus.Settings{LeaseTTL: 7 * time.Second, DedupeTTL: 3 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	check(7*time.Second, 3*time.Hour)
	for _, s := range []bus.Settings{{}, {LeaseTTL: time.Second}, {DedupeTTL: time.Hour}} {
		if err := b.Provision(ctx, s); err == nil || !strings.Contains(err.Error(), "must be positive") {
			t.Errorf("Provision(%+v) = %v, want an error about non-positive settings", s, err)
		}
	}
}
