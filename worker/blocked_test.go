package worker_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/worker"
)

// failingQueue hands out a consumer whose Next fails while failing is set, and otherwise
// answers that no work came.
type failingQueue struct{ failing, calls atomic.Int64 }

func (q *failingQueue) WorkConsumer(context.Context, time.Duration) (jetstream.Consumer, error) {
	return failingConsumer{q: q}, nil
}

// failingConsumer implements the one method the worker calls (Next); the embedded nil interface
// stands for the rest.
type failingConsumer struct {
	jetstream.Consumer
	q *failingQueue
}

func (c failingConsumer) Next(...jetstream.FetchOpt) (jetstream.Msg, error) {
	c.q.calls.Add(1)
	if c.q.failing.Load() != 0 {
		return nil, errors.New("consumer not found")
	}
	return nil, jetstream.ErrNoMessages
}

// TestBlockedWhenTheWorkConsumerFails: a worker whose work consumer fails is not blocked at
// first, is blocked (for readiness) once it has failed for longer than the bound on the
// worker's clock, and is not blocked any more once the consumer answers again.
func TestBlockedWhenTheWorkConsumerFails(t *testing.T) {
	b := bustest.New(t)
	cfg := testConfig(t, "https://dt.example")
	q := &failingQueue{}
	q.failing.Store(1)
	ep := endpoints(t, b)
	ep.Work = q
	clock := clockwork.NewFakeClock()
	w, err := worker.New(ep, cfg, worker.Options{Clock: clock, Fetchers: map[string]worker.Fetcher{"darktrace": &slowFetcher{}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	waitFor(t, "a failed fetch", func() bool { return q.calls.Load() > 0 })
	if err := w.Blocked(time.Minute); err != nil {
		t.Fatalf("Blocked right after the first failure = %v; want nil", err)
	}
	clock.Advance(2 * time.Minute)
	if err := w.Blocked(time.Minute); err == nil {
		t.Fatal("Blocked after failing for 2 minutes = nil; want an error")
	}
	q.failing.Store(0)
	// Each check moves the clock past the pullers' pause after a failure, so that a puller that
	// was not waiting yet at one check fetches at the next.
	waitFor(t, "the consumer to answer", func() bool {
		clock.Advance(time.Second)
		return w.Blocked(time.Minute) == nil
	})
}
