package darktrace

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// recordingPacer admits every request and records, in order, what it was told.
type recordingPacer struct {
	mu       sync.Mutex
	acquired int
	outcomes []Outcome
}

func (p *recordingPacer) Acquire(ctx context.Context) (func(Outcome), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.acquired++
	return func(o Outcome) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.outcomes = append(p.outcomes, o)
	}, ctx.Err()
}

// TestFetchTellsThePacer: each request is admitted by the Pacer and reports its outcome once:
// the status of an answer (a 429 included) and a latency at least the appliance's; a request
// whose context ended before the rate limiter let it go is reported as canceled.
func TestFetchTellsThePacer(t *testing.T) {
	opts := fakeOptions()
	opts.Latency = 20 * time.Millisecond
	opts.Faults = darktracetest.Faults{Script: []darktracetest.Fault{{Kind: darktracetest.FaultRateLimit, RetryAfter: time.Second}}}
	srv := darktracetest.NewServer(opts)
	defer srv.Close()
	p := &recordingPacer{}
	c := newClient(t, srv.URL, nil, func(cfg *Config) { cfg.Pacer = p })
	req := Request{Service: config.ServiceSummary}
	if _, err := c.Fetch(t.Context(), req, func([]byte) error { return nil }); ClassOf(err) != Retryable {
		t.Fatalf("first fetch (scripted 429) = %v, want a retryable error", err)
	}
	if _, err := c.Fetch(t.Context(), req, func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	_, _ = c.Fetch(canceled, req, func([]byte) error { return nil })

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.acquired != 3 || len(p.outcomes) != 2 {
		t.Fatalf("%d acquired, %d outcomes; want 3 acquired (the canceled one fails in Acquire's caller) and 2 outcomes: %+v", p.acquired, len(p.outcomes), p.outcomes)
	}
	if o := p.outcomes[0]; o.Status != http.StatusTooManyRequests || o.Failed || o.Canceled || o.Latency < opts.Latency {
		t.Errorf("outcome of the 429: %+v", o)
	}
	if o := p.outcomes[1]; o.Status != http.StatusOK || o.Failed || o.Canceled || o.Latency < opts.Latency {
		t.Errorf("outcome of the answer: %+v", o)
	}
}
