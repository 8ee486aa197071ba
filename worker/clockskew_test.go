package worker_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// skewedClock is the real clock shifted by offset: a host whose clock is off (cmd/dtfleet's
// DTFLEET_DEBUG_CLOCK_OFFSET builds the same for the chaos suite).
type skewedClock struct {
	clockwork.Clock
	offset time.Duration
}

func (c skewedClock) Now() time.Time                  { return c.Clock.Now().Add(c.offset) }
func (c skewedClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c skewedClock) Until(t time.Time) time.Duration { return t.Sub(c.Now()) }

// TestSlotRefusedForTheHostsDateGoesToAnotherWorker (issue 9, row 3; found by the chaos suite):
// a worker whose clock is an hour ahead signs every request with a date the appliance refuses
// (API DATE ERROR). That is its host's fault, not the slot's: the slot is left to another worker
// at once, not after the growing backoff of a retryable failure (the chaos suite saw a worker an
// hour ahead take the same slot nine times, each later, and hold its lane for minutes). Here the
// backoff is an hour: only a slot handed on without it is fetched by the healthy worker in time.
func TestSlotRefusedForTheHostsDateGoesToAnotherWorker(t *testing.T) {
	b := bustest.New(t)
	fake, end := fakeAppliance(t, darktracetest.Faults{})
	cfg := testConfig(t, fake.URL)
	slow := darktrace.Backoff{Base: time.Hour, Max: time.Hour}
	logs := &logtest.Buffer{}
	runWorker(t, b, cfg, worker.Options{ID: "skewed", Clock: skewedClock{Clock: clockwork.NewRealClock(), offset: time.Hour},
		Backoff: slow, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	from := end.Add(-2 * time.Hour)
	publishItem(t, b, 1, from, from.Add(time.Hour))
	waitFor(t, "the skewed worker's request to be refused for its date", func() bool {
		return strings.Contains(logs.String(), "API DATE ERROR")
	})
	runWorker(t, b, cfg, worker.Options{ID: "healthy", Backoff: slow})
	d := waitDone(t, b, 1)
	if d.Failed || d.Worker != "healthy" || d.Events == 0 {
		t.Fatalf("done marker %+v; want the slot fetched with its events by the healthy worker", d)
	}
}
