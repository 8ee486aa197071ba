package worker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/proto"
)

func rateKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	kv, err := bustest.New(t).KV(context.Background(), proto.BucketRate)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestFleetLimiterHoldsAcrossProcesses: limiters of two worker processes sharing one bucket hand
// out request instants exactly 1/rps apart between them, never the same instant twice, however
// their reservations race. The clock is frozen, so the instants are exact.
func TestFleetLimiterHoldsAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	kv := rateKV(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := clockwork.NewFakeClockAt(t0)
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

// TestFleetLimiterWaitsOnItsClock: Wait returns at once for a free instant and otherwise waits
// on the injected clock until the reserved instant, and not before it: the fake clock only moves
// when the test advances it.
func TestFleetLimiterWaitsOnItsClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := NewFleetLimiter(rateKV(t), "darktrace", 2, clock) // one request every 500 ms
	if err := l.Wait(ctx); err != nil {
		t.Fatalf("first Wait = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx) }()
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // the second Wait's timer
		t.Fatal(err)
	}
	clock.Advance(499 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the second Wait returned (%v) 1 ms before its instant", err)
	default:
	}
	clock.Advance(time.Millisecond)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("second Wait = %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the second Wait did not return at its instant")
	}
}

// TestFleetLimiterSurvivesASkewedHost: a worker whose clock is an hour ahead shares the bucket
// with one on time. Whatever the fast one stores, the slow one is never made to wait more than
// the fleet's queue bound (maxQueued/rps, under a minute here), let alone an hour.
func TestFleetLimiterSurvivesASkewedHost(t *testing.T) {
	ctx := context.Background()
	kv := rateKV(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	onTime := clockwork.NewFakeClockAt(t0)
	ahead := clockwork.NewFakeClockAt(t0.Add(time.Hour))
	const rps = 10
	const bound = time.Minute // maxQueued/rps is 25.6 s here
	slow := NewFleetLimiter(kv, "darktrace", rps, onTime).(*FleetLimiter)
	fast := NewFleetLimiter(kv, "darktrace", rps, ahead).(*FleetLimiter)
	for i := range 20 {
		if _, err := fast.reserve(ctx); err != nil {
			t.Fatal(err)
		}
		at, err := slow.reserve(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if wait := at.Sub(onTime.Now()); wait > bound {
			t.Fatalf("round %d: the on-time worker must wait %v behind a skewed host, bound %v", i, wait, bound)
		}
		onTime.Advance(time.Second / rps)
		ahead.Advance(time.Second / rps)
	}
}

// TestFleetLimiterBatchesAtHighRates: at 1000 requests/s each process reserves a batch of
// instants per CAS (far fewer bucket updates than requests), and the fleet's instants are still
// exactly 1/rps apart, never the same twice; an instant that passed unused is never handed out
// late.
func TestFleetLimiterBatchesAtHighRates(t *testing.T) {
	ctx := context.Background()
	kv := rateKV(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := clockwork.NewFakeClockAt(t0)
	const rps, perProcess = 1000, 200
	a := NewFleetLimiter(kv, "darktrace", rps, now).(*FleetLimiter)
	b := NewFleetLimiter(kv, "darktrace", rps, now).(*FleetLimiter)
	if a.batch < 2 {
		t.Fatalf("batch %d at %d requests/s, want more than one instant per reservation", a.batch, rps)
	}
	rev0 := revision(t, kv)
	var (
		mu  sync.Mutex
		got []time.Time
		wg  sync.WaitGroup
	)
	for _, l := range []*FleetLimiter{a, b} {
		for range 4 {
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
			t.Fatalf("reservation %d is at %v, want %v: batches broke the fleet-wide rate", i, at.Sub(t0), want.Sub(t0))
		}
	}
	if updates := revision(t, kv) - rev0; updates > uint64(2*perProcess/a.batch) {
		t.Errorf("%d bucket updates for %d requests in batches of %d", updates, 2*perProcess, a.batch)
	}
	// a has no instants left now; take one, let the rest of its batch pass, and take another.
	first, err := a.reserve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now.Advance(first.Sub(now.Now()) + time.Second)
	late, err := a.reserve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if late.Before(now.Now().Add(-interval)) {
		t.Errorf("an instant %v in the past was handed out", now.Now().Sub(late))
	}
}

// revision is the rate key's revision (0 before its first write).
func revision(t *testing.T, kv jetstream.KeyValue) uint64 {
	t.Helper()
	e, err := kv.Get(context.Background(), "darktrace")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return e.Revision()
}
