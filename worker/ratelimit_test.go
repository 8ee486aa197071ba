package worker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// TestFleetLimiterHoldsAcrossProcesses: limiters of two worker processes sharing one bucket hand
// out request instants exactly 1/rps apart between them, never the same instant twice, however
// their reservations race. The clock is frozen, so the instants are exact.
func TestFleetLimiterHoldsAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	b, err := bus.Connect(ctx, config.NATS{StoreDir: t.TempDir()}, bus.Options{ListenOverride: "none"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Provision(ctx, bus.Settings{LeaseTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	kv, err := b.KV(ctx, proto.BucketRate)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := func() time.Time { return t0 }
	const rps, perProcess = 5, 40
	procs := []*FleetLimiter{
		NewFleetLimiter(kv, "darktrace", rps, now).(*FleetLimiter),
		NewFleetLimiter(kv, "darktrace", rps, now).(*FleetLimiter),
	}
	other := NewFleetLimiter(kv, "other-appliance", rps, now).(*FleetLimiter)
	var (
		mu  sync.Mutex
		got []time.Time
		wg  sync.WaitGroup
	)
	for _, l := range procs {
		for range 4 { // four fetch goroutines per process
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perProcess / 4 {
					at, err := l.reserve(ctx)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					got = append(got, at)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	slices.SortFunc(got, time.Time.Compare)
	interval := time.Second / rps
	for i, at := range got {
		if want := t0.Add(time.Duration(i) * interval); !at.Equal(want) {
			t.Fatalf("reservation %d is at %v, want %v: two processes broke the fleet-wide rate", i, at.Sub(t0), want.Sub(t0))
		}
	}
	// Another appliance has its own budget: its first request is not queued behind darktrace's.
	at, err := other.reserve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !at.Equal(t0) {
		t.Errorf("another input's first reservation is at %v, want now", at.Sub(t0))
	}
}
