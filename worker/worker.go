// Package worker fetches slots. Workers are stateless: any number of them, on any host, share
// one durable pull consumer on the work stream. A worker fetches its slot from the appliance,
// processes the events (split, key, flatten, obfuscate, sort by time), publishes them as result
// chunks and a done marker, and only then acknowledges the work item.
//
// Error classes decide what happens to a work item: a retryable failure (5xx, 429, timeouts,
// resets, malformed bodies, a bus hiccup) is Nak'ed with an exponential backoff, or the
// appliance's Retry-After; a transient one (API DATE ERROR, API SIGNATURE ERROR, a redirect to
// the login page, an HTML maintenance page) is retried the same way for up to
// workers.transient_errors_for_in_minutes since the slot first failed, and then counts as
// terminal; a terminal one (missing permission, INPUT ERROR) leaves a failure record, publishes a
// failed done marker so the shipper moves on, and is terminated. The failure record says when
// the coordinator replays the slot automatically (coordinator.retry_failed_slots), so a cause
// that clears heals by itself; it can also be replayed by hand.
//
// Every answer's Date header tells the worker the appliance's clock; it records the offset
// appliance-minus-host per input (proto.ClockKey), which the coordinator plans by.
//
// It may import proto, internal/config, worker/darktrace and worker/events; it never imports the
// other roles (coordinator, shipper), which it meets only on the bus, and it declares the
// interfaces it uses (Endpoints) so that its tests fake them.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/events"
)

// Options configure a Worker.
type Options struct {
	Logger *slog.Logger
	// Clock is what the worker reads time from and waits on (default: the real clock).
	Clock clockwork.Clock
	// Registerer, when set, gets the worker's metrics (dtfleet_worker_*); nil registers none.
	Registerer prometheus.Registerer
	// DarktraceMetrics, when set, observes the requests of the clients the worker builds (not
	// of Fetchers given); the caller registers it.
	DarktraceMetrics *darktrace.Metrics
	// ID names this worker in heartbeats and markers (default "worker-" and a random UUID).
	ID string
	// Fetchers per input name; nil builds darktrace clients from the config, limited fleet-wide.
	Fetchers map[string]Fetcher
	// AckWait is the work consumer's AckWait (default DefaultAckWait); in-progress acks go every
	// AckWait/3.
	AckWait time.Duration
	// ShutdownGrace is how long in-flight slots may finish after ctx ends (default 10s).
	ShutdownGrace time.Duration
	// Backoff paces retries of retryable failures (default 1s doubling to 2m, full jitter).
	Backoff darktrace.Backoff
}

// The sort budget bounds the bytes of events held to sort slots, shared by every slot the worker
// processes at once, beyond sortFloor bytes that each slot may hold on its own. A slot that finds
// the budget spent is flushed sorted so far; if its events arrive out of time order it is sorted
// in runs (logged).
const (
	sortBudget = 16 << 20
	sortFloor  = 256 << 10
)

// DefaultAckWait is how long a work item a worker took may go without an ack or an in-progress
// ack before JetStream gives it to another worker. A live worker sends an in-progress ack every
// third of it for as long as it holds the item, so only a worker that died (killed, its host or
// network gone) waits it out; while it runs, every lane with a slot that worker held is stopped
// at that slot, since the shipper delivers in order. 15 s keeps that stop short; it was 60 s.
// A worker cut off from NATS for longer loses its items to others, which is safe: attempts of a
// slot are told apart and only one is delivered.
const DefaultAckWait = 15 * time.Second

// heartbeatPeriod is how often a worker writes its heartbeat; the heartbeats bucket's TTL (30 s,
// internal/bus) is several periods, so one slow write does not make a live worker vanish.
const heartbeatPeriod = 5 * time.Second

type lane struct {
	ln   config.Lane
	proc *events.Processor
}

// Worker consumes work items and produces results.
type Worker struct {
	ep       Endpoints
	lanes    map[string]*lane
	fetchers map[string]Fetcher
	pacers   map[string]*pacer // per input, when the worker builds its fetchers
	conc     int
	opts     Options
	logger   *slog.Logger
	clock    clockwork.Clock
	metrics  *metrics
	maxChunk int
	sortPool *sortPool
	blocks   blockPool // the sorters' event memory
	pubs     *semaphore.Weighted
	bufs     sync.Pool

	slots    atomic.Uint64
	inFlight atomic.Int64
	roomMu   sync.Mutex
	roomCh   chan struct{} // closed and replaced by freed
	places   int64         // work items pulled or being pulled (take/give), under roomMu
	started  time.Time

	inputs       map[string]config.Input
	coord        config.Coordinator
	transientFor time.Duration // workers.transient_errors_for_in_minutes; 0 fails on the first
	maxEvent     int           // workers.max_event_size_in_mb in bytes; a larger event is dropped

	// firstFailed holds when each slot (by SlotID) first failed with a transient error in this
	// process, for the bound on transient errors. A redelivery that lands on another worker
	// process starts that process's count anew, so with n processes a slot may be retried up to
	// n times the bound: the bound is a floor for a visible failure, not an exact deadline.
	mu          sync.Mutex
	firstFailed map[string]time.Time
	clocks      map[string]proto.ClockOffset // last offset written per input
	// unreachableSince is when fetching from the work consumer started failing (unix
	// nanoseconds; 0 while it answers, if only with "no messages"), for Blocked.
	unreachableSince atomic.Int64
}

// New builds a worker for cfg's lanes on the bus endpoints ep. It fails when an endpoint is
// missing or the worker's metrics cannot be registered.
func New(ep Endpoints, cfg *config.Config, opts Options) (*Worker, error) {
	if ep.Work == nil || ep.Results == nil || ep.Failures == nil || ep.Heartbeats == nil || (opts.Fetchers == nil && ep.Rate == nil) {
		return nil, errors.New("building a worker: an endpoint of the bus is missing")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.ID == "" {
		// Host and PID are in the heartbeat; the ID only has to be unique in the fleet.
		opts.ID = "worker-" + uuid.NewString()
	}
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultAckWait
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 10 * time.Second
	}
	if opts.Backoff == (darktrace.Backoff{}) {
		opts.Backoff = darktrace.Backoff{Base: time.Second, Max: 2 * time.Minute}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger.With("role", "worker", "worker", opts.ID)
	w := &Worker{
		ep: ep, lanes: map[string]*lane{}, fetchers: opts.Fetchers, conc: max(cfg.Workers.Concurrency, 1),
		opts: opts, logger: logger, clock: opts.Clock, metrics: m, started: opts.Clock.Now(),
		sortPool: &sortPool{max: sortBudget}, pubs: semaphore.NewWeighted(maxPublishBudget),
		inputs: cfg.Inputs, coord: cfg.Coordinator, transientFor: time.Duration(cfg.Workers.TransientErrorsForInMinutes) * time.Minute,
		maxEvent:    cfg.Workers.MaxEventSizeInMB << 20,
		firstFailed: map[string]time.Time{}, clocks: map[string]proto.ClockOffset{},
	}
	for _, ln := range cfg.Lanes() {
		proc, err := events.NewProcessor(events.Options{Service: ln.Service, Flatten: ln.Svc.Flatten == nil || *ln.Svc.Flatten, Obfuscation: ln.Svc.Obfuscation})
		if err != nil {
			return nil, fmt.Errorf("configuring %s.%s: %w", ln.Input, ln.Service, err)
		}
		w.lanes[ln.Key()] = &lane{ln: ln, proc: proc}
	}
	w.pacers = map[string]*pacer{}
	w.roomCh = make(chan struct{})
	if w.fetchers == nil {
		w.fetchers = map[string]Fetcher{}
		for _, name := range cfg.EnabledInputs() {
			in := cfg.Inputs[name]
			dc := darktrace.ConfigFromInput(in)
			dc.Logger = logger.With("input", name)
			dc.Metrics, dc.Input = opts.DarktraceMetrics, name
			// The signed DTAPI-Date and the clock offset read from the Date header come from the
			// worker's clock, so a shifted clock (a test's, or cmd/dtfleet's debug knob) is the
			// clock the appliance sees.
			dc.Now = opts.Clock.Now
			dc.Limiter = NewFleetLimiter(ep.Rate, name, in.RequestsPerSecond, opts.Clock)
			// workers.concurrency pullers bound the requests in flight; the pacer finds how many
			// of them the appliance serves comfortably.
			p := newPacer(name, in.RequestsPerSecond, min(cfg.Workers.MinConcurrency, w.conc), w.conc, opts.Clock, logger, m)
			p.freed = w.freed
			w.pacers[name], dc.Pacer = p, p
			c, err := darktrace.New(dc)
			if err != nil {
				return nil, fmt.Errorf("configuring input %s: %w", name, err)
			}
			w.fetchers[name] = c
		}
	}
	// Chunks must fit the server's max payload with room for headers and msgpack framing.
	w.maxChunk = max(ep.MaxPayload-32<<10, 16<<10)
	return w, nil
}

// Run consumes work items with bounded concurrency until ctx ends, then lets in-flight slots
// finish for up to ShutdownGrace before cancelling them (their items are Nak'ed and redelivered).
func (w *Worker) Run(ctx context.Context) error {
	var cons WorkSource
	cons, err := w.ep.Work.WorkConsumer(ctx, w.opts.AckWait)
	if err != nil {
		return fmt.Errorf("starting the worker: %w", err)
	}
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	w.logger.Info("worker started", "concurrency", w.conc, "lanes", len(w.lanes))
	g, gctx := errgroup.WithContext(ctx)
	var wg sync.WaitGroup
	for i := 0; i < w.conc; i++ {
		wg.Add(1)
		g.Go(func() error {
			defer wg.Done()
			for gctx.Err() == nil {
				if w.take(gctx) != nil {
					continue
				}
				stepBack := w.pullOne(gctx, workCtx, cons)
				w.give()
				if stepBack > 0 {
					select {
					case <-gctx.Done():
					case <-w.clock.After(stepBack):
					}
				}
			}
			return nil
		})
	}
	g.Go(func() error { w.heartbeat(gctx); return nil })
	// Drain: when ctx ends, the pullers stop taking items; in-flight ones get the grace period.
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	<-ctx.Done()
	select {
	case <-drained:
	case <-w.clock.After(w.opts.ShutdownGrace):
		w.logger.Warn("shutdown grace elapsed; cancelling in-flight slots (they will be redelivered)")
		cancelWork()
	}
	err = g.Wait()
	w.deregister()
	return err
}

// pullOne takes at most one work item from cons and handles it in workCtx (which outlives ctx
// for the shutdown grace); a failed pull is logged and waited out for a second. It returns how
// long the puller should step back before it takes another item (handle's answer).
func (w *Worker) pullOne(ctx, workCtx context.Context, cons WorkSource) time.Duration {
	msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
	if err != nil {
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) || ctx.Err() != nil {
			w.unreachableSince.Store(0)
			return 0
		}
		w.unreachableSince.CompareAndSwap(0, w.clock.Now().UnixNano())
		w.logger.Warn("fetching work item", "err", err)
		select {
		case <-ctx.Done():
		case <-w.clock.After(time.Second):
		}
		return 0
	}
	w.unreachableSince.Store(0)
	return w.handle(workCtx, msg)
}

func (w *Worker) heartbeat(ctx context.Context) {
	host, _ := os.Hostname()
	t := w.clock.NewTicker(heartbeatPeriod)
	defer t.Stop()
	for {
		hb := proto.Heartbeat{V: proto.SchemaVersion, ID: w.opts.ID, Host: host, PID: os.Getpid(), Started: w.started.UnixMilli(),
			Slots: w.slots.Load(), InFlight: int(w.inFlight.Load()), UpdatedAt: w.clock.Now().UnixMilli()}
		if data, err := proto.Encode(&hb); err == nil {
			if _, err := w.ep.Heartbeats.Put(ctx, w.opts.ID, data); err != nil && ctx.Err() == nil {
				w.logger.Debug("writing heartbeat", "err", err)
			}
		}
		w.publishPace(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
	}
}

func (w *Worker) deregister() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = w.ep.Heartbeats.Delete(ctx, w.opts.ID)
	w.unpublishPace(ctx)
}

// handle processes one work item and settles it: Ack, Nak with delay, or Term. It returns how
// long the calling puller should step back before it takes another item (0: at once).
func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) (stepBack time.Duration) {
	w.inFlight.Add(1)
	defer w.inFlight.Add(-1)
	meta, err := msg.Metadata()
	if err != nil {
		w.logger.Error("work item without metadata; terminating it", "err", err)
		_ = msg.Term()
		return 0
	}
	var it proto.WorkItem
	if err := proto.Decode(msg.Data(), &it); err != nil {
		if errors.Is(err, proto.ErrSchema) && it.V > proto.SchemaVersion {
			w.newerItem(ctx, msg, meta, it, err)
			return 0
		}
		w.logger.Error("undecodable work item; terminating it", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason(err.Error())
		return 0
	}
	l := w.lanes[proto.LaneKey(it.Input, it.Service)]
	f := w.fetchers[it.Input]
	if l == nil || f == nil {
		// Another worker's configuration may know this lane; do not fail the slot for it.
		w.logger.Warn("work item for a lane this worker is not configured for; leaving it to others", "input", it.Input, "service", it.Service)
		_ = msg.NakWithDelay(30 * time.Second)
		return 0
	}
	stop := w.keepAlive(ctx, msg)
	attempt := strconv.FormatUint(meta.NumDelivered, 10)
	n, err := w.process(ctx, f, l, it, attempt)
	stop()
	log := w.logger.With("input", it.Input, "service", it.Service, "seq", it.Seq, "from", proto.FormatMS(it.Start), "to", proto.FormatMS(it.End), "attempt", meta.NumDelivered)
	if it.Retry > 0 {
		log = log.With("automatic_retry", it.Retry)
	}
	class, failingFor := w.classify(it, err, meta.NumDelivered)
	switch {
	case err == nil:
		w.forget(it.SlotID)
		if aerr := msg.DoubleAck(ctx); aerr != nil {
			log.Warn("acknowledging work item (the slot may be fetched again; the shipper keeps the first result)", "err", aerr)
		}
		w.slots.Add(1)
		w.metrics.slots.WithLabelValues(it.Input, it.Service, resultFetched).Inc()
		log.Debug("slot fetched", "events", n)
	case ctx.Err() != nil:
		_ = msg.Nak()
	case class == darktrace.Terminal:
		next := w.nextRetry(it)
		what := " The slot failed; it is recorded and can be replayed once the cause is fixed."
		if !next.IsZero() {
			what = fmt.Sprintf(" The slot failed; it is recorded and will be retried automatically at %s (and with a growing backoff after that) until the cause is fixed.", next.UTC().Format(time.RFC3339))
		}
		if darktrace.ClassOf(err) == darktrace.Transient {
			what = fmt.Sprintf(" The appliance has been answering with this error for %v (workers.transient_errors_for_in_minutes).", failingFor.Round(time.Second)) + what
		}
		log.Error(darktrace.PullErrorMessage(err)+what, "err", err)
		if ferr := w.fail(ctx, it, attempt, meta.NumDelivered, err, next); ferr != nil {
			log.Warn("recording the failed slot; retrying it", "err", ferr)
			_ = msg.NakWithDelay(w.opts.Backoff.Delay(int(meta.NumDelivered)))
			return 0
		}
		w.forget(it.SlotID)
		w.metrics.slots.WithLabelValues(it.Input, it.Service, resultFailed).Inc()
		_ = msg.TermWithReason("failed for good")
	case class == darktrace.Transient && isDateError(err):
		// The appliance refused the request's date: this host's clock (or the appliance's) is
		// off, not the slot. The slot is left to another worker at once, without the growing
		// backoff (a worker an hour ahead took the same slots again and again, each time with a
		// longer delay, and held a lane for minutes), and this puller steps back for a while so
		// that it does not take the slot straight back.
		log.Warn(darktrace.PullErrorMessage(err)+" The appliance refused this host's request date; leaving the slot to another worker.",
			"err", err, "failing_for", failingFor.Round(time.Second), "retry_in", dateErrorRetry, "step_back", dateErrorStepBack)
		_ = msg.NakWithDelay(dateErrorRetry)
		return dateErrorStepBack
	case class == darktrace.Transient:
		delay := max(w.opts.Backoff.Delay(int(meta.NumDelivered)), darktrace.RetryAfter(err))
		log.Warn(darktrace.PullErrorMessage(err)+fmt.Sprintf(" The appliance answered with an error that usually clears by itself; retrying, for up to %v before the slot is recorded as failed.", w.transientFor),
			"err", err, "failing_for", failingFor.Round(time.Second), "retry_in", delay.Round(time.Millisecond))
		_ = msg.NakWithDelay(delay)
	default:
		delay := max(w.opts.Backoff.Delay(int(meta.NumDelivered)), darktrace.RetryAfter(err))
		log.Warn(darktrace.PullErrorMessage(err)+" Retrying.", "err", err, "retry_in", delay.Round(time.Millisecond))
		_ = msg.NakWithDelay(delay)
	}
	return 0
}

func (w *Worker) done(it proto.WorkItem, attempt string, chunks, n int) *proto.Done {
	return &proto.Done{V: proto.SchemaVersion, SlotID: it.SlotID, Input: it.Input, Service: it.Service, Seq: it.Seq,
		Attempt: attempt, Start: it.Start, End: it.End, Epoch: it.Epoch, Force: it.Force, Replay: it.Replay,
		Chunks: chunks, Events: n, Worker: w.opts.ID, At: w.clock.Now().UnixMilli()}
}

func (w *Worker) publishDone(ctx context.Context, d *proto.Done) error {
	data, err := proto.Encode(d)
	if err != nil {
		return err
	}
	subj := proto.DoneSubject(d.Input, d.Service, d.Seq)
	if _, err := w.ep.Results.Publish(ctx, subj, data, jetstream.WithMsgID(d.SlotID+".done."+d.Attempt)); err != nil {
		return fmt.Errorf("publishing done marker of slot %d: %w", d.Seq, err)
	}
	return nil
}

// process fetches the slot and publishes its result. It returns the number of events.
func (w *Worker) process(ctx context.Context, f Fetcher, l *lane, it proto.WorkItem, attempt string) (int, error) {
	req := darktrace.Request{Service: it.Service, Endpoint: l.ln.Svc.Endpoint, LookBack: l.ln.Svc.LookBack}
	if !l.ln.Svc.Snapshot {
		req.Start, req.End = time.UnixMilli(it.Start).UTC(), time.UnixMilli(it.End).UTC()
	}
	// RESPOND actions change state after their start (extended, cleared, expired). Their slots
	// are windows on the time of a state (an action's "updated", or its start before any
	// change), read from the no-window view, which shows every action of the last 14 days in its
	// current state: each state is in the view while it is current, and its slot is fetched
	// right after the state's time, so every state that lasts longer than the request period
	// (plus the safety lag) is seen, in exactly one slot's window (plus the look-back overlap,
	// deduplicated by the key, which includes the state). Slots older than the view reach back
	// use the window on start, as before: they get each action in its current state.
	lo, hi := it.Start-l.ln.Svc.LookBack.Milliseconds(), it.End
	view := it.Service == config.ServiceAntigena && !l.ln.Svc.Snapshot &&
		time.UnixMilli(it.End).After(w.clock.Now().Add(-antigenaViewReach))
	req.View = view
	// Snapshots are keyed by their period's start, so a refetched snapshot has the same keys.
	poll := time.UnixMilli(it.Start).UTC()
	out := newChunkWriter(ctx, w.clock, w.ep.Results, it, attempt, w.maxChunk, w.pubs, &w.bufs)
	defer out.abort()
	acc := &sorter{floor: sortFloor, pool: w.sortPool, blocks: &w.blocks, flush: out.add, onDisorder: func() {
		w.logger.Warn("slot larger than the sort budget arrived out of time order; its events are sorted in runs",
			"input", it.Input, "service", it.Service, "seq", it.Seq, "budget_bytes", sortBudget)
	}}
	defer acc.release()
	received := w.metrics.events.WithLabelValues(it.Input, it.Service)
	tooLarge := w.metrics.dropped.WithLabelValues(it.Input, it.Service, reasonTooLarge)
	dropped := 0
	add := func(ev events.Event) error {
		if w.maxEvent > 0 && len(ev.Data) > w.maxEvent {
			// Never a broken line in Devo: the event is dropped whole, loudly, with its key, and
			// the rest of the slot goes on.
			dropped++
			tooLarge.Inc()
			w.logger.Error("event larger than workers.max_event_size_in_mb dropped; the rest of the slot is delivered",
				"input", it.Input, "service", it.Service, "seq", it.Seq, "key", ev.Key, "bytes", len(ev.Data), "max_bytes", w.maxEvent)
			return w.recordTooLarge(ctx, it, ev.Key, -1, int64(len(ev.Data)))
		}
		return acc.add(ev)
	}
	if view {
		bounded := add
		add = func(ev events.Event) error {
			if ev.Time < lo || ev.Time > hi {
				return nil // another slot's state
			}
			return bounded(ev)
		}
	}
	// The client never holds an event over the bound either: one 2 GB event costs the bound,
	// not 2 GB. Its key is read from the start of it the client kept, when the key field comes
	// before the bulk (as the appliance writes it); else its place in the response says which.
	req.MaxEventSize = w.maxEvent
	req.TooLarge = func(index int, size int64, head []byte) error {
		received.Inc()
		dropped++
		tooLarge.Inc()
		key, _ := events.KeyFromHead(it.Service, head)
		w.logger.Error("event larger than workers.max_event_size_in_mb dropped unread; the rest of the slot is delivered",
			"input", it.Input, "service", it.Service, "seq", it.Seq, "key", key, "index", index, "bytes", size, "max_bytes", w.maxEvent)
		return w.recordTooLarge(ctx, it, key, index, size)
	}
	var st darktrace.Stats
	var err error
	if lf, ok := f.(lookupFetcher); ok {
		// The key and time fields are found in the pass that splits the response.
		st, err = lf.FetchLookup(ctx, req, l.proc.Fields(), func(raw []byte, vals [][]byte) error {
			received.Inc()
			// The sorter copies each event into blocks it reuses: the processor need not.
			return l.proc.ProcessFoundLent(raw, vals, poll, add)
		})
	} else {
		st, err = f.Fetch(ctx, req, func(raw []byte) error {
			received.Inc()
			return l.proc.Process(raw, poll, add)
		})
	}
	if st.Dated {
		w.recordClock(ctx, it.Input, st.ClockOffset)
	}
	if err != nil {
		return 0, fmt.Errorf("fetching %s: %w", l.ln.Svc.Endpoint, err)
	}
	if err := acc.finish(); err != nil {
		return 0, err
	}
	chunks, err := out.close()
	if err != nil {
		return 0, err
	}
	d := w.done(it, attempt, chunks, acc.n)
	d.Dropped = dropped
	if err := w.publishDone(ctx, d); err != nil {
		return 0, err
	}
	return acc.n, nil
}

// Blocked returns an error when fetching from the work consumer has failed for longer than bound
// on the worker's clock (the consumer deleted, its stream unavailable), or nil. Waiting for work
// that does not come is not blocked. It is safe for concurrent use with Run.
func (w *Worker) Blocked(bound time.Duration) error {
	since := w.unreachableSince.Load()
	if since == 0 {
		return nil
	}
	if d := w.clock.Now().Sub(time.Unix(0, since)); d > bound {
		return fmt.Errorf("the worker has not reached its work consumer for %s", d.Round(time.Second))
	}
	return nil
}

// antigenaViewReach is how far back the no-window /antigena view is trusted to reach: the
// appliance keeps 14 days; a day less leaves room for clock differences and a slot's length.
const antigenaViewReach = 13 * 24 * time.Hour

// dateErrorRetry is how soon a slot refused for its request date (API DATE ERROR) may be taken
// again, by any worker; dateErrorStepBack is how long the puller that met the refusal takes no
// item, so that a worker with a healthy clock takes the slot.
const (
	dateErrorRetry    = time.Second
	dateErrorStepBack = 5 * time.Second
)

// isDateError reports whether err is the appliance refusing the request's date.
func isDateError(err error) bool {
	var dt *darktrace.Error
	return errors.As(err, &dt) && dt.Kind == darktrace.KindDate
}
