package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// leaseKV starts an embedded bus and returns its lease bucket, whose TTL is ttl.
func leaseKV(t *testing.T, ttl time.Duration) jetstream.KeyValue {
	t.Helper()
	b := bustest.NewWith(t, bus.Settings{LeaseTTL: ttl, DedupeTTL: time.Hour})
	kv, err := b.KV(context.Background(), proto.BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOneHolderAtATime(t *testing.T) {
	kv := leaseKV(t, time.Hour)
	ctx := context.Background()
	a, b := New(kv, "coordinator", "a", time.Hour, nil), New(kv, "coordinator", "b", time.Hour, nil)
	if ok, err := a.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("a: TryAcquire = %v, %v; want the free lease", ok, err)
	}
	if ok, err := b.TryAcquire(ctx); ok || err != nil {
		t.Fatalf("b: TryAcquire = %v, %v; want false while a holds it", ok, err)
	}
	if !a.Valid() || b.Valid() {
		t.Fatalf("Valid: a=%v b=%v; want only a", a.Valid(), b.Valid())
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatalf("a: Renew = %v", err)
	}
	// Release hands the lease over at once, without waiting for the TTL.
	a.Release(ctx)
	if a.Valid() {
		t.Fatal("a is still valid after Release")
	}
	if ok, err := b.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("b: TryAcquire after a released = %v, %v", ok, err)
	}
	// a's renewal now fails: it must learn that it lost the lease rather than overwrite b.
	if err := a.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("a: Renew after b took over = %v, want ErrLost", err)
	}
	e, err := kv.Get(ctx, "coordinator")
	if err != nil {
		t.Fatal(err)
	}
	var l proto.Lease
	if err := proto.Decode(e.Value(), &l); err != nil {
		t.Fatal(err)
	}
	if l.Holder != "b" {
		t.Fatalf("the lease record names %q, want b", l.Holder)
	}
}

func TestValidExpiresWithoutRenewal(t *testing.T) {
	kv := leaseKV(t, time.Hour)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := New(kv, "shipper.dt.status", "a", 10*time.Second, nil, WithClock(clock))
	if ok, err := l.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("TryAcquire = %v, %v", ok, err)
	}
	clock.Advance(4 * time.Second)
	if !l.Valid() {
		t.Fatal("not valid 4 s after acquiring, with a 10 s TTL")
	}
	// Past half a TTL without a confirmed renewal another holder could take over once the key
	// expires: the holder must stop acting as the leader before that.
	clock.Advance(2 * time.Second)
	if l.Valid() {
		t.Fatal("still valid 6 s after the last renewal, with a 10 s TTL")
	}
}

// TestStandbyTakesOverADeadHolder: a holder that dies (stops renewing, never releases) is
// replaced by a standby once the bucket's TTL expires the key.
func TestStandbyTakesOverADeadHolder(t *testing.T) {
	const ttl = time.Second
	kv := leaseKV(t, ttl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dead := New(kv, "coordinator", "dead", ttl, nil)
	if ok, err := dead.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("TryAcquire = %v, %v", ok, err)
	}
	standby := New(kv, "coordinator", "standby", ttl, nil)
	var acquired atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- Hold(ctx, standby, func() { acquired.Store(true) }, func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		})
	}()
	waitFor(t, "the standby to take over the expired lease", acquired.Load)
	if err := dead.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("the dead holder's late renewal = %v, want ErrLost", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Hold = %v, want nil after ctx ended", err)
	}
}

// TestHoldStopsWorkWhenLeaseLost: when someone else writes the key, the holder's work is
// cancelled at its next renewal and Hold goes back to standing by.
func TestHoldStopsWorkWhenLeaseLost(t *testing.T) {
	const ttl = 600 * time.Millisecond
	kv := leaseKV(t, ttl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := New(kv, "shipper.dt.modelbreaches", "a", ttl, nil)
	var (
		mu       sync.Mutex
		starts   int
		stopped  = make(chan struct{}, 4)
		holdDone = make(chan error, 1)
	)
	go func() {
		holdDone <- Hold(ctx, l, nil, func(ctx context.Context) error {
			mu.Lock()
			starts++
			mu.Unlock()
			<-ctx.Done()
			stopped <- struct{}{}
			return nil
		})
	}()
	waitFor(t, "the lease to be held", l.Valid)
	// Another shipper overwrites the lease: a's next renewal sees the revision change.
	if _, err := kv.Put(context.Background(), "shipper.dt.modelbreaches", []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("the holder's work was not cancelled after the lease was taken")
	}
	if l.Valid() {
		t.Fatal("the lease is still valid after it was lost")
	}
	// Once the intruder's key expires, a holds it again and restarts its work.
	waitFor(t, "the lease to be re-acquired", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return starts == 2
	})
	cancel()
	if err := <-holdDone; err != nil {
		t.Fatalf("Hold = %v", err)
	}
}

// TestHoldReturnsWorkError: an error of the work itself (not a lost lease) ends Hold and frees
// the lease for a standby.
func TestHoldReturnsWorkError(t *testing.T) {
	kv := leaseKV(t, time.Hour)
	l := New(kv, "coordinator", "a", time.Hour, nil)
	boom := errors.New("boom")
	if err := Hold(context.Background(), l, nil, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Hold = %v, want the work's error", err)
	}
	other := New(kv, "coordinator", "b", time.Hour, nil)
	if ok, err := other.TryAcquire(context.Background()); !ok || err != nil {
		t.Fatalf("the lease was not released after the work failed: %v, %v", ok, err)
	}
}

// TestHoldRenewsOnItsClock: Hold renews the lease every third of its TTL as measured by its
// injected clock, and the renewal keeps the lease valid past half a TTL (the fake clock never
// moves by itself, so each renewal is caused by the Advance before it).
func TestHoldRenewsOnItsClock(t *testing.T) {
	kv := leaseKV(t, time.Hour)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	const ttl = 30 * time.Second
	l := New(kv, "coordinator", "a", ttl, nil, WithClock(clock))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Hold(ctx, l, nil, func(ctx context.Context) error { <-ctx.Done(); return nil })
	}()
	revision := func() uint64 {
		e, err := kv.Get(context.Background(), "coordinator")
		if err != nil {
			return 0
		}
		return e.Revision()
	}
	waitFor(t, "the lease to be held", l.Valid)
	first := revision()
	for i := range 3 {
		// The renewal ticker is the one waiter on the clock while the lease is held.
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		before := revision()
		clock.Advance(ttl / 3)
		waitFor(t, fmt.Sprintf("renewal %d", i+1), func() bool { return revision() > before })
	}
	if got := revision(); got < first+3 {
		t.Fatalf("revision %d after three renewals from %d", got, first)
	}
	// Three thirds of a TTL have passed since acquiring: only the renewals keep it valid.
	if !l.Valid() {
		t.Fatal("the lease is not valid after its renewals")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Hold = %v", err)
	}
}

// TestHoldStandsByWhenWorkFindsLeaseLost: work that returns an error wrapping ErrLost (a
// checkpoint conflict during a fail-over) sends Hold back to standby, not out: it releases the
// lease, leaves it to another holder while that one holds it, and takes it again once it is free.
func TestHoldStandsByWhenWorkFindsLeaseLost(t *testing.T) {
	const ttl = time.Hour // the key never expires during the test: only releases free it
	kv := leaseKV(t, ttl)
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := New(kv, "shipper.dt.status", "a", ttl, nil, WithClock(clock))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var starts atomic.Int32
	holdDone := make(chan error, 1)
	go func() {
		holdDone <- Hold(ctx, a, nil, func(ctx context.Context) error {
			if starts.Add(1) == 1 {
				return fmt.Errorf("moving the checkpoint: %w", ErrLost)
			}
			<-ctx.Done()
			return nil
		})
	}()
	keyGone := func() bool {
		_, err := kv.Get(context.Background(), "shipper.dt.status")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}
	waitFor(t, "the work to report the lease lost and the lease to be released", func() bool {
		return starts.Load() == 1 && keyGone()
	})
	select {
	case err := <-holdDone:
		t.Fatalf("Hold returned %v after its work found the lease lost; want it to stand by", err)
	default:
	}
	// Another holder takes the lease while a stands by; a keeps competing but cannot take it.
	b := New(kv, "shipper.dt.status", "b", ttl, nil)
	if ok, err := b.TryAcquire(ctx); !ok || err != nil {
		t.Fatalf("b: TryAcquire while a stands by = %v, %v; want the free lease", ok, err)
	}
	for range 2 {
		// a's one waiter on its clock is its poll timer: each Advance makes it try once more.
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clock.Advance(ttl / 4)
	}
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // a tried, failed and waits again
		t.Fatal(err)
	}
	if n := starts.Load(); n != 1 || a.Valid() {
		t.Fatalf("a started its work %d times (valid %v) while b held the lease; want once, not valid", n, a.Valid())
	}
	b.Release(ctx)
	clock.Advance(ttl / 4)
	waitFor(t, "a to take the lease again", func() bool { return starts.Load() == 2 && a.Valid() })
	cancel()
	if err := <-holdDone; err != nil {
		t.Fatalf("Hold = %v, want nil after ctx ended", err)
	}
}
