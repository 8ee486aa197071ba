package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// pacer is one input's adaptive concurrency limit in this process (darktrace.Pacer): requests
// wait in Acquire while the limit is full, and each one's outcome moves the limit (aimd). Every
// worker process adapts on its own observations; the fleet's sum is what the appliance sees,
// and each process publishes its share (proto.Pace) for status. The rate ceiling
// (requests_per_second) stays a separate, fleet-wide limiter the client waits on after Acquire.
type pacer struct {
	input   string
	ceiling float64 // requests_per_second, for the pacing record
	clock   clockwork.Clock
	logger  *slog.Logger
	limitG  prometheus.Gauge
	inG     prometheus.Gauge
	floorG  prometheus.Gauge
	decr    *prometheus.CounterVec

	mu       sync.Mutex
	a        *aimd
	inFlight int
	waiting  int           // requests waiting in Acquire
	wake     chan struct{} // closed when room may have opened
	logged   int           // the limit last logged
	freed    func()        // called after a request ends (the worker's room wakes its pullers)
}

func newPacer(input string, ceiling float64, lo, hi int, clock clockwork.Clock, logger *slog.Logger, m *metrics) *pacer {
	p := &pacer{input: input, ceiling: ceiling, clock: clock, logger: logger, a: newAIMD(lo, hi), wake: make(chan struct{}),
		limitG: m.paceLimit.WithLabelValues(input), inG: m.paceInFlight.WithLabelValues(input),
		floorG: m.paceFloor.WithLabelValues(input), decr: m.paceDecreases}
	p.logged = p.a.cap()
	p.limitG.Set(float64(p.a.cap()))
	return p
}

// Acquire waits until the limit has room for one more request, or ctx ends.
func (p *pacer) Acquire(ctx context.Context) (func(darktrace.Outcome), error) {
	for {
		p.mu.Lock()
		if p.inFlight < p.a.cap() {
			p.inFlight++
			p.inG.Set(float64(p.inFlight))
			p.mu.Unlock()
			var once sync.Once
			return func(o darktrace.Outcome) { once.Do(func() { p.release(o) }) }, nil
		}
		wake := p.wake
		p.waiting++
		p.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-wake:
		}
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// release ends one request: it frees its place and lets the limit learn from its outcome. The
// limit was used in full when requests wait for room or every place is taken.
func (p *pacer) release(o darktrace.Outcome) {
	p.observe(o)
	// After p.mu is given back: the worker's take holds its own lock while it reads the limit.
	if p.freed != nil {
		p.freed()
	}
}

func (p *pacer) observe(o darktrace.Outcome) {
	p.mu.Lock()
	defer p.mu.Unlock()
	busy := p.waiting > 0 || p.inFlight >= p.a.cap()
	p.inFlight--
	reason := p.a.observe(p.clock.Now(), o, busy)
	if reason != "" {
		p.decr.WithLabelValues(p.input, reason).Inc()
	}
	lim := p.a.cap()
	p.inG.Set(float64(p.inFlight))
	p.limitG.Set(float64(lim))
	p.floorG.Set(p.a.floor.Seconds())
	// Log a marked change only (the limit halved or doubled since the last line), not each step.
	if lim >= 2*p.logged || 2*lim <= p.logged {
		p.logger.Info("pacing: requests in flight to the appliance changed", "input", p.input, "limit", lim, "was", p.logged,
			"max", p.a.max, "latency", o.Latency.Round(time.Millisecond), "latency_floor", p.a.floor.Round(time.Millisecond),
			"status", o.Status, "reason", cmpReason(reason))
		p.logged = lim
	}
	close(p.wake)
	p.wake = make(chan struct{})
}

func cmpReason(r string) string {
	if r == "" {
		return "answers near the latency floor"
	}
	return r
}

// snapshot returns the pacing record of this process for input.
func (p *pacer) snapshot(worker string, now time.Time) proto.Pace {
	p.mu.Lock()
	defer p.mu.Unlock()
	return proto.Pace{V: proto.SchemaVersion, Worker: worker, Limit: p.a.cap(), Max: p.a.max, InFlight: p.inFlight,
		FloorMS: p.a.floor.Milliseconds(), Ceiling: p.ceiling, At: now.UnixMilli()}
}

// limit returns the current limit.
func (p *pacer) limit() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.a.cap()
}

// publishPace writes every pacer's record to the rate bucket (called with the heartbeat, every
// heartbeatPeriod); a failed write is logged at debug level and written again next period.
func (w *Worker) publishPace(ctx context.Context) {
	kv, ok := w.ep.Rate.(ClockStore)
	if !ok || len(w.pacers) == 0 {
		return
	}
	now := w.clock.Now()
	for input, p := range w.pacers {
		rec := p.snapshot(w.opts.ID, now)
		data, err := proto.Encode(&rec)
		if err == nil {
			_, err = kv.Put(ctx, proto.PaceKey(input, w.opts.ID), data)
		}
		if err != nil && ctx.Err() == nil {
			w.logger.Debug("writing the pacing record", "input", input, "err", err)
		}
	}
}

// unpublishPace deletes this worker's pacing records, so status does not count a stopped worker.
func (w *Worker) unpublishPace(ctx context.Context) {
	kv, ok := w.ep.Rate.(RecordStore)
	if !ok {
		return
	}
	for input := range w.pacers {
		_ = kv.Delete(ctx, proto.PaceKey(input, w.opts.ID))
	}
}

// held is the work items a process may hold: twice its inputs' current limits plus one per
// input. An item holds a place from its pull until its results are stored, and after its request
// ended it waits on the stream's acknowledgements; twice the limit keeps the limit's requests
// busy through that wait, and the one more has a request ready the moment a place frees. 0 means
// no pacer bounds this process.
func (w *Worker) held() int64 {
	n := 0
	for _, p := range w.pacers {
		n += 2*p.limit() + 1
	}
	return int64(n)
}

// take waits until this process holds fewer work items than its pacing allows (held) and takes
// a place for one more, or returns ctx's error. The caller gives the place back with freed once
// the item it pulled is handled, or at once when the pull brought none. Without it every puller
// would take an item from the stream and wait on the pacer with it: a process whose limit is 4
// would sit on workers.concurrency items that another worker process with room could fetch now,
// and a killed process would leave them all to AckWait.
func (w *Worker) take(ctx context.Context) error {
	for {
		n := w.held() // before roomMu: a pacer calls freed, which takes roomMu, after its own lock
		w.roomMu.Lock()
		if n == 0 || w.places < n {
			w.places++
			w.roomMu.Unlock()
			return nil
		}
		ch := w.roomCh
		w.roomMu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// give returns a place taken with take and wakes the pullers waiting for one.
func (w *Worker) give() {
	w.roomMu.Lock()
	w.places--
	w.roomMu.Unlock()
	w.freed()
}

// freed wakes the pullers waiting in take: a place was given back or a request ended (the
// limit may have grown).
func (w *Worker) freed() {
	w.roomMu.Lock()
	close(w.roomCh)
	w.roomCh = make(chan struct{})
	w.roomMu.Unlock()
}

// PacingLimit returns this process's current adaptive limit of input's requests in flight, and
// false when the input is not paced here (fetchers given by the caller). It is safe for
// concurrent use with Run.
func (w *Worker) PacingLimit(input string) (int, bool) {
	p, ok := w.pacers[input]
	if !ok {
		return 0, false
	}
	return p.limit(), true
}
