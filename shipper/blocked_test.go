package shipper

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/dtfleet/dtfleet/shipper/devo"
)

// TestBlockedWhileRetrying fails the output's first six Sends, 30 s apart on the clock: the lane
// is not blocked at first, is blocked (for readiness) once its batch has been retried for longer
// than the bound, and is not blocked any more once the batch is delivered.
func TestBlockedWhileRetrying(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.output("out", 6)
	s, err := New(h.bus(), h.cfg, Options{ID: "s1", Clock: h.clock, Outputs: []devo.Output{out},
		Backoff: func() backoff.BackOff { return backoff.NewConstantBackOff(30 * time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	if err := s.Blocked(time.Minute); err != nil {
		t.Fatalf("Blocked before any delivery = %v; want nil", err)
	}
	h.publish(1, 10, "k1")
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	for n := 1; n <= 6; n++ {
		h.waitFor("the next attempt", func() bool { return len(out.sendTimes()) >= n })
		// Attempt n is tried (n-1)*30 s after the first.
		err := s.Blocked(time.Minute)
		switch blocked := time.Duration(n-1)*30*time.Second > time.Minute; {
		case blocked && (err == nil || !strings.Contains(err.Error(), "darktrace.modelbreaches")):
			t.Fatalf("Blocked after %d attempts = %v; want the lane named", n, err)
		case !blocked && err != nil:
			t.Fatalf("Blocked after %d attempts = %v; want nil", n, err)
		}
		// The lane's ticker and its retry timer.
		if err := h.clock.BlockUntilContext(wctx, 2); err != nil {
			t.Fatalf("the lane did not wait to retry after attempt %d: %v", n, err)
		}
		h.clock.Advance(30 * time.Second)
	}
	h.waitDelivered(1)
	if err := s.Blocked(time.Minute); err != nil {
		t.Fatalf("Blocked after the delivery = %v; want nil", err)
	}
}
