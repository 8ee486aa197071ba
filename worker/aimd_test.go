package worker

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// step is one observation fed to an aimd: an answer after latency with status (0 and failed:
// no answer), admitted while the limit was full or not, advance after it on the fake clock.
type step struct {
	latency time.Duration
	status  int
	failed  bool
	idle    bool // the limit was not full when the request was admitted
	queued  time.Duration
	advance time.Duration
}

func ok(lat time.Duration) step { return step{latency: lat, status: http.StatusOK, advance: lat} }

func repeat(n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestAIMD(t *testing.T) {
	const ms = time.Millisecond
	cases := []struct {
		name     string
		lo, hi   int
		warmup   []step // limit grows through these first
		steps    []step
		want     func(before, after int) bool
		wantDesc string
	}{
		{name: "grows while latency stays at the floor", lo: 1, hi: 64, steps: repeat(20, ok(200*ms)),
			want: func(b, a int) bool { return a > b && a > 1 }, wantDesc: "grows above 1"},
		{name: "never above the upper bound", lo: 1, hi: 8, steps: repeat(500, ok(200*ms)),
			want: func(_, a int) bool { return a == 8 }, wantDesc: "== 8"},
		{name: "shrinks when latency rises above twice the floor", lo: 1, hi: 64, warmup: repeat(40, ok(200*ms)),
			steps: repeat(10, step{latency: 500 * ms, status: 200, advance: time.Second}),
			want:  func(b, a int) bool { return a < b }, wantDesc: "shrinks"},
		{name: "holds on a modest rise", lo: 1, hi: 64, warmup: repeat(40, ok(200*ms)),
			steps: repeat(10, step{latency: 350 * ms, status: 200, idle: true, advance: time.Second}),
			want:  func(b, a int) bool { return a == b }, wantDesc: "unchanged"},
		{name: "holds on one slow answer among fast ones", lo: 1, hi: 64, warmup: repeat(40, ok(200*ms)),
			steps: []step{{latency: 600 * ms, status: 200, idle: true, advance: time.Second}},
			want:  func(b, a int) bool { return a == b }, wantDesc: "unchanged"},
		{name: "halves on 429", lo: 1, hi: 64, warmup: repeat(40, ok(200*ms)),
			steps: []step{{latency: 10 * ms, status: http.StatusTooManyRequests, advance: time.Second}},
			want:  func(b, a int) bool { return a <= b/2+1 && a < b }, wantDesc: "about half"},
		{name: "halves on 5xx", lo: 1, hi: 64, warmup: repeat(40, ok(200*ms)),
			steps: []step{{latency: 10 * ms, status: http.StatusServiceUnavailable, advance: time.Second}},
			want:  func(b, a int) bool { return a <= b/2+1 && a < b }, wantDesc: "about half"},
		{name: "halves on no answer", lo: 1, hi: 64, warmup: repeat(40, ok(200*ms)),
			steps: []step{{latency: 10 * ms, failed: true, advance: time.Second}},
			want:  func(b, a int) bool { return a <= b/2+1 && a < b }, wantDesc: "about half"},
		{name: "shrinks once per round trip, not per failed request", lo: 1, hi: 64, warmup: repeat(40, ok(200*ms)),
			// Ten 429s of requests in flight together (each sent before the first one's answer).
			steps: append([]step{{latency: 100 * ms, status: 429}}, repeat(9, step{latency: 100 * ms, status: 429, advance: ms})...),
			want:  func(b, a int) bool { return a >= b/2 && a < b }, wantDesc: "one halving"},
		{name: "returns fast to near the limit a 429 cut", lo: 1, hi: 64, warmup: append(repeat(40, ok(200*ms)),
			step{latency: 10 * ms, status: http.StatusTooManyRequests, advance: time.Second}),
			// Before the 429 the limit was 41; it is now 20. Sixteen answers (one round trip or
			// so at 20 in flight) bring it back to 36 (0.9 of 41); one per round trip would take
			// it only to 21.
			steps: repeat(16, ok(200*ms)),
			want:  func(b, a int) bool { return b <= 21 && a >= 35 }, wantDesc: "from about 20 back to 36"},
		{name: "then grows by one per round trip only", lo: 1, hi: 64, warmup: append(append(repeat(40, ok(200*ms)),
			step{latency: 10 * ms, status: http.StatusTooManyRequests, advance: time.Second}), repeat(16, ok(200*ms))...),
			steps: repeat(36, ok(200*ms)),
			want:  func(b, a int) bool { return a == b+1 }, wantDesc: "one more after one round trip's answers"},
		{name: "never below the lower bound", lo: 4, hi: 64, steps: repeat(50, step{latency: 10 * ms, status: 429, advance: time.Second}),
			want: func(_, a int) bool { return a == 4 }, wantDesc: "== 4"},
		{name: "not raised while unused", lo: 1, hi: 64, steps: repeat(50, step{latency: 200 * ms, status: 200, idle: true, advance: 200 * ms}),
			want: func(b, a int) bool { return a == b }, wantDesc: "unchanged"},
		{name: "not raised while the rate ceiling holds requests back", lo: 1, hi: 64,
			steps: repeat(50, step{latency: 200 * ms, status: 200, queued: time.Second, advance: time.Second}),
			want:  func(b, a int) bool { return a == b }, wantDesc: "unchanged"},
		{name: "fixed when both bounds are equal", lo: 16, hi: 16, steps: append(repeat(20, ok(200*ms)), step{latency: 10 * ms, status: 429, advance: time.Second}),
			want: func(_, a int) bool { return a == 16 }, wantDesc: "== 16"},
		{name: "canceled requests teach nothing", lo: 1, hi: 64, warmup: repeat(40, ok(200*ms)),
			steps: repeat(5, step{latency: 5 * time.Second, failed: true, status: -1, advance: time.Second}),
			want:  func(b, a int) bool { return a == b }, wantDesc: "unchanged"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			a := newAIMD(c.lo, c.hi)
			feed := func(steps []step) {
				for _, s := range steps {
					o := darktrace.Outcome{Latency: s.latency, Status: s.status, Failed: s.failed, Queued: s.queued}
					if s.status == -1 {
						o = darktrace.Outcome{Latency: s.latency, Failed: true, Canceled: true}
					}
					a.observe(clock.Now(), o, !s.idle)
					if a.cap() < c.lo || a.cap() > c.hi {
						t.Fatalf("limit %d outside [%d, %d]", a.cap(), c.lo, c.hi)
					}
					clock.Advance(s.advance)
				}
			}
			feed(c.warmup)
			before := a.cap()
			feed(c.steps)
			if after := a.cap(); !c.want(before, after) {
				t.Errorf("limit %d -> %d, want %s", before, after, c.wantDesc)
			}
		})
	}
}

// TestAIMDForgetsAnOldFloor: an appliance that became slower for good is re-measured: after two
// floor windows the new latency is the floor and the limit grows again.
func TestAIMDForgetsAnOldFloor(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := newAIMD(1, 64)
	a.observe(clock.Now(), darktrace.Outcome{Latency: 50 * time.Millisecond, Status: 200}, true)
	for range 2*int(floorWindow/time.Second) + 1 {
		clock.Advance(time.Second)
		a.observe(clock.Now(), darktrace.Outcome{Latency: 400 * time.Millisecond, Status: 200}, true)
	}
	if a.floor != 400*time.Millisecond {
		t.Fatalf("floor %v after two windows of 400ms answers, want 400ms", a.floor)
	}
	before := a.cap()
	for range 50 {
		clock.Advance(400 * time.Millisecond)
		a.observe(clock.Now(), darktrace.Outcome{Latency: 400 * time.Millisecond, Status: 200}, true)
	}
	if a.cap() <= before {
		t.Errorf("limit %d -> %d at the new floor, want growth", before, a.cap())
	}
}

// TestPacerBoundsInFlight: Acquire admits no more than the limit and wakes a waiter when a
// request ends.
func TestPacerBoundsInFlight(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	p := newPacer("dt", 0, 2, 2, clockwork.NewFakeClock(), slog.New(slog.DiscardHandler), m)
	ctx := context.Background()
	d1, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Acquire(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := p.Acquire(short); err == nil {
		t.Fatal("a third request was admitted under a limit of 2")
	}
	got := make(chan error, 1)
	go func() { _, err := p.Acquire(ctx); got <- err }()
	d1(darktrace.Outcome{Latency: time.Millisecond, Status: 200})
	d1(darktrace.Outcome{Latency: time.Millisecond, Status: 200}) // a second call is ignored
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if p.inFlight != 2 {
		t.Errorf("in flight %d, want 2", p.inFlight)
	}
}
