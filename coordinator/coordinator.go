// Package coordinator plans time slots. One coordinator is active per deployment (a lease in KV);
// for each input and windowed service it plans slots from the plan cursor to now minus a safety
// lag, in steps of the service's window, and for each snapshot service one slot per period. It
// publishes slots as work items for the workers and moves the plan cursor with the two-step
// protocol described on planStore.
//
// It may import proto, internal/config and internal/lease; it never imports the other roles
// (worker, shipper), which it meets only on the bus, and it declares the interfaces it uses
// (Bus, Publisher) so that its tests fake them.
//
// "Now" is the appliance's clock, not the host's: the workers record the offset
// appliance-minus-host of each input from the Date header of its answers (proto.ClockKey, in the
// rate bucket), and the coordinator adds it to its own clock, so that no window is planned
// beyond what the appliance itself has reached whichever host's clock is off. Before any
// observation it uses its own clock.
//
// The leader also replays failed slots automatically (coordinator.retry_failed_slots): a failure
// record whose NextRetry has come is replayed as a new slot at the end of its lane, like
// `dtfleet replay`, so the lane's order and the shipper's dedupe hold for it.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/lease"
	"github.com/dtfleet/dtfleet/proto"
)

// Options configure a Coordinator.
type Options struct {
	Logger *slog.Logger
	// Clock is what the coordinator reads time from and waits on, its lease included (default:
	// the real clock).
	Clock clockwork.Clock
	// Registerer, when set, gets the coordinator's metrics (dtfleet_role_leader and
	// dtfleet_coordinator_*); nil registers none.
	Registerer prometheus.Registerer
	// ID names this coordinator in its lease (default "coordinator-" and a random UUID).
	ID string
	// Tick is how often lanes are checked (default 1s, never more than the shortest period).
	Tick time.Duration
	// MaxSlotsPerStep bounds one reservation (default 512), so a plan checkpoint stays small.
	MaxSlotsPerStep int
	// Usage tells how full the results stream is; planning stops while it is nearly full. Nil
	// uses the publisher when it is a jetstream.JetStream (JetStreamUsage), else checks nothing.
	Usage StreamUsage
	// Storage tells how full the JetStream storage the KV buckets share is; planning stops while
	// it is nearly full. Nil uses the Bus when it implements StorageUsage (*bus.Bus does), else
	// checks nothing.
	Storage StorageUsage
}

// Coordinator plans every lane of a configuration while it holds the coordinator lease.
type Coordinator struct {
	lanes     []config.Lane
	plans     *planStore
	delivered jetstream.KeyValue
	dedupe    jetstream.KeyValue
	rate      jetstream.KeyValue // the workers' clock observations (proto.ClockKey)
	failed    jetstream.KeyValue // failure records (proto.BucketFailed)
	coord     config.Coordinator
	lastRetry time.Time
	lease     *lease.Lease
	logger    *slog.Logger
	clock     clockwork.Clock
	metrics   *metrics
	tick      time.Duration
	lag       time.Duration
	maxAhead  uint64
	maxBytes  uint64 // max_backlog_in_mb, in bytes
	perStep   int
	started   map[string]bool
	// limited is set by PlanLane when a lane had slots due but no room: the leader then checks
	// again soon, not a whole tick later, so workers do not idle while the shipper catches up.
	limited       bool
	usage         StreamUsage
	paused        bool      // planning stopped because the results stream is nearly full
	usageAt       time.Time // when the results stream's usage was last read (resultsFull)
	storage       StorageUsage
	storagePaused bool      // planning stopped because the JetStream storage is nearly full
	storageAt     time.Time // when the storage usage was last read (storageFull)
	clockMu       sync.Mutex
	anchors       map[string]clockAnchor // per input: the last clock observation read (applianceOffset)
	// backfill is logBackfill's state per lane.
	backfill map[string]*backfillLog
}

// initialSlotBytes is the slot size assumed before a lane's first delivery tells how big its
// slots are (so that the default 64 MB of backlog is 8 slots). It is a guess on the large side:
// a guess too small plans many more slots than the backlog holds once their size is known (32
// slots of 10 MB under 64 MB), all fetched at once and competing for the same cores, so that the
// first delivery waits for most of them and planning then stops until the shippers have drained
// the excess. A guess too large costs nothing: before the first delivery the workers' pacing is
// still in its slow start, far below 8 requests in flight.
const initialSlotBytes = 8 << 20

// limitedRecheck is how soon the leader plans again when a lane is at its backlog limit.
const limitedRecheck = 50 * time.Millisecond

// Bus opens the coordinator's KV buckets (plan, delivered, dedupe, leases) by name; *bus.Bus
// implements it. Work items go out through a Publisher, passed separately.
type Bus interface {
	KV(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// New builds a coordinator for cfg's lanes. It fails when a bucket cannot be opened, the
// configuration has no lease TTL, or the metrics cannot be registered.
func New(ctx context.Context, b Bus, pub Publisher, cfg *config.Config, opts Options) (*Coordinator, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("role", "coordinator")
	clock := opts.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	if cfg.Coordinator.LeaseTTLInSeconds <= 0 {
		return nil, errors.New("building the coordinator: coordinator.lease_ttl_in_seconds must be positive")
	}
	plan, err := b.KV(ctx, proto.BucketPlan)
	if err != nil {
		return nil, err
	}
	delivered, err := b.KV(ctx, proto.BucketDelivered)
	if err != nil {
		return nil, err
	}
	dedupe, err := b.KV(ctx, proto.BucketDedupe)
	if err != nil {
		return nil, err
	}
	leases, err := b.KV(ctx, proto.BucketLeases)
	if err != nil {
		return nil, err
	}
	rate, err := b.KV(ctx, proto.BucketRate)
	if err != nil {
		return nil, err
	}
	failed, err := b.KV(ctx, proto.BucketFailed)
	if err != nil {
		return nil, err
	}
	id := opts.ID
	if id == "" {
		id = "coordinator-" + uuid.NewString()
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	// The leases bucket's TTL is at least this TTL (bus.SettingsFor takes the larger of the
	// coordinator's and the shippers'), so the key never expires under a live holder.
	ttl := time.Duration(cfg.Coordinator.LeaseTTLInSeconds) * time.Second
	c := &Coordinator{
		lanes:     cfg.Lanes(),
		plans:     &planStore{kv: plan, pub: pub, clock: clock, logger: logger},
		delivered: delivered,
		dedupe:    dedupe,
		rate:      rate,
		failed:    failed,
		coord:     cfg.Coordinator,
		lease:     lease.New(leases, proto.LeaseCoordinator, id, ttl, logger, lease.WithClock(clock)),
		logger:    logger,
		clock:     clock,
		metrics:   m,
		tick:      opts.Tick,
		lag:       time.Duration(cfg.Coordinator.SafetyLagInSeconds) * time.Second,
		maxAhead:  uint64(max(cfg.Coordinator.MaxSlotsAhead, 1)),
		maxBytes:  uint64(max(cfg.Coordinator.MaxBacklogInMB, 1)) << 20,
		perStep:   opts.MaxSlotsPerStep,
		started:   map[string]bool{},
		usage:     opts.Usage,
		anchors:   map[string]clockAnchor{},
	}
	if js, ok := pub.(jetstream.JetStream); ok && c.usage == nil {
		c.usage = JetStreamUsage{JS: js}
	}
	c.storage = opts.Storage
	if su, ok := b.(StorageUsage); ok && c.storage == nil {
		c.storage = su
	}
	c.metrics.paused.WithLabelValues(proto.StreamResults).Set(0)
	c.metrics.paused.WithLabelValues(storageStream).Set(0)
	c.setLeader(0) // standby until the lease is acquired
	if c.tick <= 0 {
		c.tick = time.Second
	}
	if c.perStep <= 0 {
		c.perStep = 512
	}
	for _, ln := range c.lanes {
		if ln.Svc.Period > 0 && ln.Svc.Period < c.tick {
			c.tick = ln.Svc.Period
		}
	}
	return c, nil
}

// Run plans until ctx ends: standby while another coordinator holds the lease, leader otherwise.
func (c *Coordinator) Run(ctx context.Context) error {
	return lease.Hold(ctx, c.lease, func() {
		c.logger.Info("coordinator lease acquired; planning", "lanes", len(c.lanes))
	}, c.lead)
}

// lead plans while the lease is held; the leader gauge is 1 for every lane meanwhile.
func (c *Coordinator) lead(ctx context.Context) error {
	c.setLeader(1)
	defer c.setLeader(0)
	t := c.clock.NewTimer(c.tick)
	defer t.Stop()
	delivered, stop := c.watchDeliveries(ctx)
	defer stop()
	for {
		c.limited = false
		for _, ln := range c.lanes {
			if ctx.Err() != nil {
				return nil
			}
			if !c.lease.Valid() {
				break
			}
			if err := c.PlanLane(ctx, ln); err != nil && ctx.Err() == nil {
				c.logger.Warn("planning failed; retrying next tick", "input", ln.Input, "service", ln.Service, "err", err)
			}
		}
		if c.coord.RetriesFailed() && c.lease.Valid() && ctx.Err() == nil && c.clock.Since(c.lastRetry) >= retryCheck {
			c.lastRetry = c.clock.Now()
			if err := c.RetryFailed(ctx); err != nil && ctx.Err() == nil {
				c.logger.Warn("retrying failed slots; trying again next tick", "err", err)
			}
		}
		wait := c.tick
		var moved <-chan struct{}
		if c.limited {
			wait = min(wait, limitedRecheck)
			moved = delivered
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
		case <-moved:
		}
	}
}

// watchDeliveries returns a channel that receives (without blocking the watch) when a delivery
// checkpoint moves, and a function that stops the watch and waits for its goroutine. A lane at
// its backlog limit is planned again as soon as its shipper delivers, not up to limitedRecheck
// later: a shipper delivers a slot of 10 MB in about 25 ms, so a fixed recheck left the workers
// idle for most of each wait. When the watch cannot start, the channel never receives and the
// recheck alone applies.
func (c *Coordinator) watchDeliveries(ctx context.Context) (<-chan struct{}, func()) {
	moved := make(chan struct{}, 1)
	w, err := c.delivered.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		c.logger.Debug("watching the delivery checkpoints; planning at the limit rechecks on a timer only", "err", err)
		return moved, func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			select {
			case moved <- struct{}{}:
			default:
			}
		}
	}()
	return moved, func() {
		_ = w.Stop()
		<-done
	}
}

func (c *Coordinator) setLeader(v float64) {
	for _, ln := range c.lanes {
		c.metrics.leader.WithLabelValues("coordinator", proto.LaneKey(ln.Input, ln.Service)).Set(v)
	}
}

// PlanLane brings one lane's plan up to date: it republishes leftover reservations, resets the
// lane when its start time or persistence version changed, and plans every slot that is due,
// within the lane's backlog limit.
func (c *Coordinator) PlanLane(ctx context.Context, ln config.Lane) error {
	key := proto.LaneKey(ln.Input, ln.Service)
	offset := c.applianceOffset(ctx, ln.Input)
	for guard := 0; guard < 1000; guard++ {
		now := c.clock.Now().Add(offset)
		st, rev, err := c.plans.get(ctx, key)
		if err != nil {
			return err
		}
		if st == nil {
			st = initialPlan(ln, now)
			if _, err := c.plans.put(ctx, key, st, 0); err != nil && !errors.Is(err, errConflict) {
				return err
			}
			continue
		}
		if !c.started[key] {
			c.started[key] = true
			c.logger.Info(fmt.Sprintf("Starting data collection every %d seconds", int(ln.Svc.Period/time.Second)), "input", ln.Input, "service", ln.Service)
		}
		c.logBackfill(ctx, ln, st, now)
		if len(st.Pending) > 0 {
			pending := append([]proto.WorkItem(nil), st.Pending...)
			if err := c.plans.publish(ctx, pending); err != nil {
				return err
			}
			if err := c.plans.confirm(ctx, key, pending); err != nil {
				return err
			}
			continue
		}
		if reset := c.resetIfChanged(ln, st, now); reset {
			if _, err := c.plans.put(ctx, key, st, rev); err != nil {
				if errors.Is(err, errConflict) {
					continue
				}
				return err
			}
			c.purgeDedupe(ctx, ln, st.Epoch-1)
			continue
		}
		if c.resultsFull(ctx) || c.storageFull(ctx) {
			return nil // logged and counted by resultsFull and storageFull; reservations above still went out
		}
		room, err := c.room(ctx, key, st)
		if err != nil {
			return err
		}
		items := c.due(ln, st, now, min(room, c.perStep))
		if len(items) == 0 {
			if probe := *st; room == 0 && len(c.due(ln, &probe, now, 1)) > 0 {
				c.limited = true // slots are due, but the backlog is full
			}
			return nil
		}
		st.Pending = items
		if _, err := c.plans.put(ctx, key, st, rev); err != nil {
			if errors.Is(err, errConflict) {
				continue
			}
			return err
		}
		c.logger.Info(fmt.Sprintf("Total number of time slots to be processed: %d", len(items)),
			"input", ln.Input, "service", ln.Service,
			"first_seq", items[0].Seq, "from", proto.FormatMS(items[0].Start), "to", proto.FormatMS(items[len(items)-1].End))
		if err := c.plans.publish(ctx, items); err != nil {
			return err
		}
		if err := c.plans.confirm(ctx, key, items); err != nil {
			return err
		}
		c.metrics.planned.WithLabelValues(ln.Input, ln.Service).Add(float64(len(items)))
		if len(items) < c.perStep {
			if probe := *st; len(items) == room && len(c.due(ln, &probe, now, 1)) > 0 {
				c.limited = true // the backlog filled up with slots still due
			}
			return nil
		}
	}
	return fmt.Errorf("planning %s: too many concurrent updates", key)
}

// resetIfChanged applies a changed start_time_in_utc_format or persistence_version: the lane
// starts over from the new start time in a new epoch (new slot IDs, dedupe keys of the old epoch
// no longer consulted). Sequence numbers continue, so the shipper's order has no hole.
func (c *Coordinator) resetIfChanged(ln config.Lane, st *proto.Plan, now time.Time) bool {
	switch {
	case st.StartConfig != ln.Svc.StartTimeInUTCFormat:
		c.logger.Info(fmt.Sprintf(`The configuration property "start_time" is having a different value from previous collector executions so the persisted values will be removed. The new "start_time" value will be used as starting point, previous_value: "%s", new_value: "%s"`,
			st.StartConfig, ln.Svc.StartTimeInUTCFormat), "input", ln.Input, "service", ln.Service)
	case st.PersistenceVersion != ln.Svc.PersistenceVersion:
		c.logger.Info(fmt.Sprintf(`The configuration property "persistence_version" is having a different value from previous collector executions so the persisted values will be removed. previous_value: "%d", new_value: "%d"`,
			st.PersistenceVersion, ln.Svc.PersistenceVersion), "input", ln.Input, "service", ln.Service)
	default:
		return false
	}
	st.StartConfig = ln.Svc.StartTimeInUTCFormat
	st.PersistenceVersion = ln.Svc.PersistenceVersion
	st.Epoch++
	st.Cursor = startCursor(ln, now)
	return true
}

// purgeDedupe removes the dedupe records of an old epoch. It is housekeeping: shippers only
// consult the current epoch's records, and the bucket's TTL would remove them anyway.
func (c *Coordinator) purgeDedupe(ctx context.Context, ln config.Lane, epoch uint64) {
	lister, err := c.dedupe.ListKeysFiltered(ctx, proto.DedupeFilter(ln.Input, ln.Service, epoch))
	if err != nil {
		c.logger.Debug("listing old dedupe records", "err", err)
		return
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		if err := c.dedupe.Purge(ctx, k); err != nil {
			c.logger.Debug("purging old dedupe record", "key", k, "err", err)
		}
	}
}

// room is how many more slots the lane may plan before its backlog (planned, not delivered)
// reaches its limit: max_slots_ahead slots, and max_backlog_in_mb of results, in slots of the
// average size the lane delivered so far (of initialSlotBytes, or of the part of the first slot
// delivered if larger, before its first delivery; at least two slots however big they are).
// Bounding the backlog in bytes paces the workers to the shipper: the results stream, the
// server's memory (JetStream keeps recently written blocks in memory) and the shipper's markers
// stay bounded however fast the appliance answers and however slow an output is.
func (c *Coordinator) room(ctx context.Context, key string, st *proto.Plan) (int, error) {
	var deliveredSeq, resultBytes uint64
	e, err := c.delivered.Get(ctx, key)
	switch {
	case err == nil:
		var d proto.Delivery
		if err := proto.Decode(e.Value(), &d); err != nil {
			return 0, fmt.Errorf("reading delivery checkpoint %s: %w", key, err)
		}
		deliveredSeq, resultBytes = d.Seq, d.ResultBytes
	case errors.Is(err, jetstream.ErrKeyNotFound):
	default:
		return 0, fmt.Errorf("reading delivery checkpoint %s: %w", key, err)
	}
	limit := c.maxAhead
	switch {
	case deliveredSeq == 0:
		// A first slot delivered in part is at least as big as its part.
		limit = min(limit, max(c.maxBytes/max(initialSlotBytes, resultBytes), 2))
	case resultBytes > 0:
		avg := max(resultBytes/deliveredSeq, 1)
		limit = min(limit, max(c.maxBytes/avg, 2))
	}
	var backlog uint64
	if planned := st.NextSeq - 1; planned > deliveredSeq {
		backlog = planned - deliveredSeq
	}
	if backlog >= limit {
		return 0, nil
	}
	return int(limit - backlog), nil
}

// due returns up to n slots that are due now, advancing st's cursor and NextSeq.
func (c *Coordinator) due(ln config.Lane, st *proto.Plan, now time.Time, n int) []proto.WorkItem {
	if n <= 0 {
		return nil
	}
	lane := fmt.Sprintf("e%d", st.Epoch)
	var items []proto.WorkItem
	if ln.Svc.Snapshot {
		period := max(ln.Svc.Period, time.Second).Milliseconds()
		bucket := now.UnixMilli() / period * period
		if st.Cursor < bucket {
			items = append(items, newItem(ln, st, bucket, bucket+period, lane, now))
			st.Cursor = bucket
		}
		return items
	}
	window := ln.Svc.Window.Milliseconds()
	horizon := now.Add(-c.lag).UnixMilli()
	for len(items) < n && st.Cursor+window <= horizon {
		items = append(items, newItem(ln, st, st.Cursor, st.Cursor+window, lane, now))
		st.Cursor += window
	}
	// Caught up: a partial window once a request period has passed keeps live data fresh.
	if len(items) < n && horizon-st.Cursor >= max(ln.Svc.Period.Milliseconds(), 1000) {
		items = append(items, newItem(ln, st, st.Cursor, horizon, lane, now))
		st.Cursor = horizon
	}
	return items
}
