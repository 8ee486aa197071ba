package worker_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// holdingFetcher takes every slot and never answers, as a worker process that is about to be
// killed does; held counts the slots it took.
type holdingFetcher struct{ held atomic.Int64 }

func (f *holdingFetcher) Fetch(ctx context.Context, _ darktrace.Request, _ func([]byte) error) (darktrace.Stats, error) {
	f.held.Add(1)
	<-ctx.Done()
	return darktrace.Stats{}, ctx.Err()
}

// TestKilledWorkersSlotGoesToAnotherWorker: a worker process dies (its NATS connection ends with
// no ack, nak or in-progress ack again) holding a slot. With the default options another worker
// fetches the slot within the deadline of waitDone (30 s): the consumer's AckWait must be well
// under it, since the shipper, delivering in order, waits at that slot meanwhile. It was 60 s.
func TestKilledWorkersSlotGoesToAnotherWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the work consumer's AckWait")
	}
	ctx := context.Background()
	store := t.TempDir()
	b, err := bus.Connect(ctx, config.NATS{StoreDir: store}, bus.Options{Name: t.Name(), ListenOverride: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Provision(ctx, bustest.Settings); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "https://dt.example")

	// The doomed worker, on a connection of its own to the same server.
	doomed, err := bus.Connect(ctx, config.NATS{URL: b.ClientURL}, bus.Options{Name: "doomed", JoinStore: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(doomed.Close)
	hold := &holdingFetcher{}
	runWorker(t, doomed, cfg, worker.Options{Fetchers: map[string]worker.Fetcher{"darktrace": hold},
		ShutdownGrace: 100 * time.Millisecond}) // its slot is not coming back: no need to wait at the end
	now := time.Now().UTC().Truncate(time.Hour)
	publishItem(t, b, 1, now.Add(-time.Hour), now)
	waitFor(t, "the doomed worker to hold the slot", func() bool { return hold.held.Load() == 1 })
	doomed.NC.Close() // killed: the server hears nothing more about the slot

	f := &slowFetcher{events: [][]byte{breach(1, now.Add(-50*time.Minute), 10)}}
	runWorker(t, b, cfg, worker.Options{Fetchers: map[string]worker.Fetcher{"darktrace": f}})
	d := waitDone(t, b, 1)
	if d.Failed || d.Events != 1 {
		t.Fatalf("done marker %+v; want the slot fetched by the live worker with one event", d)
	}
}
