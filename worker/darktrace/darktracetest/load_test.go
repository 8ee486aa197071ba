package darktracetest

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// TestLatencyGrowsWithLoad: LatencyPerInFlight adds its delay for every other request in flight.
func TestLatencyGrowsWithLoad(t *testing.T) {
	h := NewHandler(Options{Latency: 200 * time.Millisecond, LatencyPerInFlight: 5 * time.Millisecond})
	defer h.Close()
	for _, c := range []struct {
		inFlight int64
		want     time.Duration
	}{{1, 200 * time.Millisecond}, {2, 205 * time.Millisecond}, {41, 400 * time.Millisecond}, {0, 200 * time.Millisecond}} {
		if got := h.latency(c.inFlight); got != c.want {
			t.Errorf("latency with %d in flight = %v, want %v", c.inFlight, got, c.want)
		}
	}
}

// TestRateLimitAbove: with RateLimitAbove 2, a third request while two are being served is
// answered 429 with a Retry-After and counted; the two are served.
func TestRateLimitAbove(t *testing.T) {
	h := NewHandler(Options{Now: func() time.Time { return testNow }, Latency: time.Hour, RateLimitAbove: 2})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { get(t, h, "/summarystatistics") }) // held by the latency until Close
	}
	waitFor(t, "two requests in flight", func() bool { return h.InFlight() == 2 })
	rec := get(t, h, "/summarystatistics")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Errorf("third request: %d, Retry-After %q; want 429 with a Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if n := h.Throttled(); n != 1 {
		t.Errorf("Throttled = %d, want 1", n)
	}
	h.Close()
	wg.Wait()
	if n := h.Throttled(); n != 1 {
		t.Errorf("Throttled = %d after the held requests ended, want 1", n)
	}
}
