// Package status reads a fleet's state from its KV buckets: per lane the planned and delivered
// cursors, events, duplicates and failed slots; the leaders; the failure records awaiting a
// replay; the workers' heartbeats. It is the one reader of that state: `dtfleet status`, the
// Prometheus collector, the demo, the bench and the tests all use Read.
//
// It may import internal/config and proto, and reaches the buckets only through KVSource; it
// must not import the roles (coordinator, worker, shipper) or anything that runs them.
package status

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// KVSource opens the fleet's KV buckets by name (proto.Bucket*). *bus.Bus implements it. KV must
// return an error, not a nil bucket, when the bucket cannot be opened.
type KVSource interface {
	KV(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// Lane is one lane's state as `dtfleet status` shows it.
type Lane struct {
	Input          string    `json:"input"`
	Service        string    `json:"service"`
	PlannedSeq     uint64    `json:"planned_seq"`
	PlannedUntil   time.Time `json:"planned_until,omitzero"`
	Pending        int       `json:"pending_publish"`
	DeliveredSeq   uint64    `json:"delivered_seq"`
	DeliveredUntil time.Time `json:"delivered_until,omitzero"`
	Backlog        uint64    `json:"backlog_slots"`
	Lag            string    `json:"lag,omitempty"`
	Events         uint64    `json:"events_delivered"`
	Duplicates     uint64    `json:"duplicates_dropped"`
	FailedPassed   uint64    `json:"failed_slots_passed"`
	Epoch          uint64    `json:"epoch"`
	Shipper        string    `json:"shipper_leader,omitempty"`
	ShipperHost    string    `json:"shipper_leader_host,omitempty"`
	// Snapshot says the lane's service is a snapshot (one slot per period, no event-time window).
	Snapshot bool `json:"-"`
}

// FailedSlot is a failure record awaiting a replay.
type FailedSlot struct {
	Input   string    `json:"input"`
	Service string    `json:"service"`
	Seq     uint64    `json:"seq"`
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
	// Retries counts the automatic retries that failed; NextRetry is when the next one is due
	// (absent when failed slots are not retried automatically).
	Retries   int        `json:"retries"`
	NextRetry *time.Time `json:"next_retry,omitempty"`
	// Key is the record's key in proto.BucketFailed, for `dtfleet failed clear KEY`.
	Key string `json:"key"`
	// Event, when set, makes this the record of one event of the slot that failed while the
	// rest of the slot was delivered (an event over workers.max_event_size_in_mb): its dedupe key,
	// or "index N" in the slot's response. A replay does not clear it; `failed clear` does.
	Event string `json:"event,omitempty"`
	// Replay is the command (without -c) that replays the window to the millisecond and so
	// clears the record once the replayed slot is delivered.
	Replay string `json:"replay"`
}

// PlanningPaused says why the leading coordinator stopped planning, and since when.
type PlanningPaused struct {
	Reason    string    `json:"reason"`
	UsedBytes uint64    `json:"used_bytes"`
	RoomBytes uint64    `json:"room_bytes"`
	Since     time.Time `json:"since"`
}

// Worker is a worker's last heartbeat.
type Worker struct {
	ID       string    `json:"id"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Slots    uint64    `json:"slots_done"`
	InFlight int       `json:"in_flight"`
	Seen     time.Time `json:"last_seen"`
}

// Status is the whole fleet's state at Now.
type Status struct {
	Now         time.Time `json:"now"`
	Coordinator string    `json:"coordinator_leader,omitempty"`
	// CoordinatorHost is where the coordinator leader runs ("host pid N"), when its lease says.
	CoordinatorHost string `json:"coordinator_leader_host,omitempty"`
	// PlanningPaused is set while the leading coordinator plans nothing new because the JetStream
	// storage the KV buckets share is nearly full (proto.PausedStorageKey).
	PlanningPaused *PlanningPaused `json:"planning_paused,omitempty"`
	Lanes          []Lane          `json:"lanes"`
	Failed         []FailedSlot    `json:"failed_slots"`
	Workers        []Worker        `json:"workers"`
	// Pacing is the fleet's adaptive pacing per enabled input.
	Pacing []Pacing `json:"pacing"`
}

// CaughtUp reports whether every windowed lane delivered up to end and every snapshot lane
// delivered at least once.
func (s *Status) CaughtUp(end time.Time) bool {
	for _, l := range s.Lanes {
		if l.Snapshot && l.DeliveredSeq < 1 || !l.Snapshot && l.DeliveredUntil.Before(end) {
			return false
		}
	}
	return true
}

// Events returns the events delivered over every lane.
func (s *Status) Events() uint64 {
	var n uint64
	for _, l := range s.Lanes {
		n += l.Events
	}
	return n
}

// Read reads every checkpoint, lease, failure record and heartbeat of cfg's lanes. Any read
// that fails, listing a bucket's keys included, fails the whole Read: a partial status would
// pass for a healthy one.
func Read(ctx context.Context, src KVSource, cfg *config.Config, now time.Time) (*Status, error) {
	kv := map[string]jetstream.KeyValue{}
	for _, name := range []string{proto.BucketPlan, proto.BucketDelivered, proto.BucketLeases, proto.BucketFailed, proto.BucketWorkers, proto.BucketRate} {
		k, err := src.KV(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("opening bucket %s: %w", name, err)
		}
		kv[name] = k
	}
	st := &Status{Now: now.UTC(), Lanes: []Lane{}, Failed: []FailedSlot{}, Workers: []Worker{}}
	if l, err := get[proto.Lease](ctx, kv[proto.BucketLeases], proto.LeaseCoordinator); err != nil {
		return nil, err
	} else if l != nil {
		st.Coordinator, st.CoordinatorHost = l.Holder, leaseHost(l)
	}
	if p, err := get[proto.Paused](ctx, kv[proto.BucketPlan], proto.PausedStorageKey); err != nil {
		return nil, err
	} else if p != nil {
		st.PlanningPaused = &PlanningPaused{Reason: p.Reason, UsedBytes: p.Used, RoomBytes: p.Room, Since: time.UnixMilli(p.At).UTC()}
	}
	for _, ln := range cfg.Lanes() {
		// Lag is measured on the appliance's clock (the offset the workers recorded from its Date
		// header), since the windows are the appliance's times; the host's clock otherwise.
		offset, err := applianceOffset(ctx, kv[proto.BucketRate], ln.Input)
		if err != nil {
			return nil, err
		}
		applianceNow := now.Add(offset)
		ls, err := readLane(ctx, kv, ln, applianceNow)
		if err != nil {
			return nil, err
		}
		st.Lanes = append(st.Lanes, ls)
	}
	failed, err := listAll[proto.Failure](ctx, kv[proto.BucketFailed], proto.BucketFailed)
	if err != nil {
		return nil, err
	}
	for _, f := range failed {
		st.Failed = append(st.Failed, failedSlot(f))
	}
	sort.Slice(st.Failed, func(i, j int) bool { return st.Failed[i].From.Before(st.Failed[j].From) })
	beats, err := listAll[proto.Heartbeat](ctx, kv[proto.BucketWorkers], proto.BucketWorkers)
	if err != nil {
		return nil, err
	}
	for _, h := range beats {
		st.Workers = append(st.Workers, Worker{ID: h.ID, Host: h.Host, PID: h.PID, Slots: h.Slots, InFlight: h.InFlight, Seen: time.UnixMilli(h.UpdatedAt).UTC()})
	}
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].ID < st.Workers[j].ID })
	if st.Pacing, err = readPacing(ctx, kv[proto.BucketRate], cfg, now); err != nil {
		return nil, err
	}
	return st, nil
}

// readLane reads one lane's plan, delivery checkpoint and shipper lease.
func readLane(ctx context.Context, kv map[string]jetstream.KeyValue, ln config.Lane, now time.Time) (Lane, error) {
	key := proto.LaneKey(ln.Input, ln.Service)
	ls := Lane{Input: ln.Input, Service: ln.Service, Snapshot: ln.Svc.Snapshot}
	plan, err := get[proto.Plan](ctx, kv[proto.BucketPlan], key)
	if err != nil {
		return ls, err
	}
	if plan != nil {
		ls.PlannedSeq, ls.Pending, ls.Epoch = plan.NextSeq-1, len(plan.Pending), plan.Epoch
		if plan.Cursor > 0 {
			ls.PlannedUntil = time.UnixMilli(plan.Cursor).UTC()
			if ln.Svc.Snapshot {
				ls.PlannedUntil = ls.PlannedUntil.Add(ln.Svc.Period)
			}
		}
	}
	d, err := get[proto.Delivery](ctx, kv[proto.BucketDelivered], key)
	if err != nil {
		return ls, err
	}
	if d != nil {
		ls.DeliveredSeq, ls.Events, ls.Duplicates, ls.FailedPassed = d.Seq, d.Events, d.Dups, d.Failed
		if d.End > 0 {
			ls.DeliveredUntil = time.UnixMilli(d.End).UTC()
			// A snapshot's period ends after its poll, and a window cannot be delivered before it
			// ends: either is no lag, never a negative one.
			ls.Lag = max(now.Sub(ls.DeliveredUntil), 0).Round(time.Second).String()
		}
	}
	if ls.PlannedSeq > ls.DeliveredSeq {
		ls.Backlog = ls.PlannedSeq - ls.DeliveredSeq
	}
	l, err := get[proto.Lease](ctx, kv[proto.BucketLeases], proto.ShipperLease(ln.Input, ln.Service))
	if err != nil {
		return ls, err
	}
	if l != nil {
		ls.Shipper, ls.ShipperHost = l.Holder, leaseHost(l)
	}
	return ls, nil
}

// get reads and decodes key; a key that is not there is (nil, nil).
// applianceOffset returns how far the appliance's clock is ahead of the NATS server's (0 when no
// worker recorded it). The record holds the appliance's time at the observation (At+OffsetMS,
// where the recording worker's own clock cancels out) and the bucket stamps when it was written
// on the server's clock: their difference holds even when the recording worker's host clock is
// skewed, which At alone would carry into every lag.
func applianceOffset(ctx context.Context, kv jetstream.KeyValue, input string) (time.Duration, error) {
	e, err := kv.Get(ctx, proto.ClockKey(input))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", proto.ClockKey(input), err)
	}
	var off proto.ClockOffset
	if err := proto.Decode(e.Value(), &off); err != nil {
		return 0, fmt.Errorf("reading %s: %w", proto.ClockKey(input), err)
	}
	return time.UnixMilli(off.At + off.OffsetMS).Sub(e.Created()), nil
}

func get[T any, P interface {
	*T
	proto.Versioned
}](ctx context.Context, kv jetstream.KeyValue, key string) (*T, error) {
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	v := new(T)
	if err := proto.Decode(e.Value(), P(v)); err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	return v, nil
}

// listAll reads every record of a bucket, in key order. A key deleted between the listing and
// its read is skipped (records come and go: a replay clears a failure, a heartbeat expires).
func listAll[T any, P interface {
	*T
	proto.Versioned
}](ctx context.Context, kv jetstream.KeyValue, bucket string) ([]*T, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing bucket %s: %w", bucket, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// The lister ends its channel quietly when ctx ends: a short list is then not the bucket.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("listing bucket %s: %w", bucket, err)
	}
	slices.Sort(keys)
	var out []*T
	for _, k := range keys {
		v, err := get[T, P](ctx, kv, k)
		if err != nil {
			return nil, err
		}
		if v != nil {
			out = append(out, v)
		}
	}
	return out, nil
}

// leaseHost says where a lease's holder runs: "host NAME pid N", or "" for a lease written by
// an older build.
func leaseHost(l *proto.Lease) string {
	if l.Host == "" {
		return ""
	}
	return fmt.Sprintf("host %s pid %d", l.Host, l.PID)
}
