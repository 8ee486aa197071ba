package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// Publisher is the part of JetStream the planner needs: asynchronous publishing whose futures
// resolve when the stream stored the message.
type Publisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

// planStore reads and writes plan checkpoints and publishes reserved slots. The coordinator and
// the replay command share it, so both obey the same two-step protocol:
//
//  1. reserve: a revision-checked Update stores the new slots in Plan.Pending together with the
//     advanced NextSeq and Cursor;
//  2. publish: every pending slot is published with its SlotID as Nats-Msg-Id and awaited;
//  3. confirm: a revision-checked Update removes exactly the published slots from Pending.
//
// A crash after 1 leaves the slots pending; whoever plans the lane next republishes them under
// the same IDs, so JetStream's duplicate window drops a copy that did get stored. The cursor never
// moves without its slots being stored first, so nothing is lost and nothing is planned twice
// under another ID.
type planStore struct {
	kv     jetstream.KeyValue
	pub    Publisher
	clock  clockwork.Clock
	logger *slog.Logger
}

// errConflict means another writer updated the checkpoint first; the caller re-reads and retries.
var errConflict = errors.New("plan checkpoint changed concurrently")

func (p *planStore) get(ctx context.Context, key string) (*proto.Plan, uint64, error) {
	e, err := p.kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, nil
		}
		return nil, 0, fmt.Errorf("reading plan checkpoint %s: %w", key, err)
	}
	var st proto.Plan
	if err := proto.Decode(e.Value(), &st); err != nil {
		return nil, 0, fmt.Errorf("reading plan checkpoint %s: %w", key, err)
	}
	return &st, e.Revision(), nil
}

// put writes st with a revision check (rev 0: create).
func (p *planStore) put(ctx context.Context, key string, st *proto.Plan, rev uint64) (uint64, error) {
	st.V = proto.SchemaVersion
	st.UpdatedAt = p.clock.Now().UnixMilli()
	data, err := proto.Encode(st)
	if err != nil {
		return 0, fmt.Errorf("encoding plan checkpoint %s: %w", key, err)
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = p.kv.Create(ctx, key, data)
	} else {
		nrev, err = p.kv.Update(ctx, key, data, rev)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, errConflict
		}
		return 0, fmt.Errorf("writing plan checkpoint %s: %w", key, err)
	}
	return nrev, nil
}

// ackTimeout bounds the wait for JetStream's acknowledgement of a published work item. An ack
// that never comes (the stream's leader died mid-publish) must not pin the lane: the items whose
// acks are late are published again under the same Nats-Msg-Id, which the stream's duplicate
// window makes idempotent.
const ackTimeout = 10 * time.Second

// publishAttempts is how often publish tries items whose acks time out before it gives up. The
// reservation stays in Plan.Pending, so the caller's next planning step republishes them.
const publishAttempts = 3

// errAckTimeout means JetStream did not acknowledge a publish within ackTimeout.
var errAckTimeout = errors.New("no acknowledgement from the work stream within the publish timeout")

// publish publishes items and waits until JetStream stored each one (or reported it a duplicate).
// Items whose acknowledgement does not arrive within ackTimeout are published again, up to
// publishAttempts times in all; then it returns an error wrapping errAckTimeout and the items stay
// reserved for the next attempt.
func (p *planStore) publish(ctx context.Context, items []proto.WorkItem) error {
	todo := items
	for attempt := 1; ; attempt++ {
		late, err := p.publishOnce(ctx, todo)
		if err != nil {
			return err
		}
		if len(late) == 0 {
			return nil
		}
		first := late[0]
		if attempt >= publishAttempts {
			return fmt.Errorf("publishing %d slots of %s.%s from %d after %d attempts: %w", len(late), first.Input, first.Service, first.Seq, attempt, errAckTimeout)
		}
		p.logger.Warn("work items were not acknowledged in time; publishing them again under the same IDs",
			"input", first.Input, "service", first.Service, "slots", len(late), "first_seq", first.Seq, "timeout", ackTimeout, "attempt", attempt)
		todo = late
	}
}

// publishOnce publishes items and waits for their acknowledgements for up to ackTimeout in all.
// It returns the items whose acknowledgement had not arrived by then.
func (p *planStore) publishOnce(ctx context.Context, items []proto.WorkItem) ([]proto.WorkItem, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(items))
	for i := range items {
		data, err := proto.Encode(&items[i])
		if err != nil {
			return nil, fmt.Errorf("encoding work item %s: %w", items[i].SlotID, err)
		}
		msg := &nats.Msg{Subject: proto.WorkSubject(items[i].Input, items[i].Service), Data: data, Header: nats.Header{}}
		f, err := p.pub.PublishMsgAsync(msg, jetstream.WithMsgID(items[i].SlotID))
		if err != nil {
			return nil, fmt.Errorf("publishing slot %d of %s.%s: %w", items[i].Seq, items[i].Input, items[i].Service, err)
		}
		futures = append(futures, f)
	}
	timer := p.clock.NewTimer(ackTimeout)
	defer timer.Stop()
	expired := false
	var late []proto.WorkItem
	for i, f := range futures {
		if expired {
			// Past the deadline: take what has arrived, without waiting.
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return nil, fmt.Errorf("publishing slot %d of %s.%s: %w", items[i].Seq, items[i].Input, items[i].Service, err)
			default:
				late = append(late, items[i])
			}
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return nil, fmt.Errorf("publishing slot %d of %s.%s: %w", items[i].Seq, items[i].Input, items[i].Service, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.Chan():
			expired = true
			late = append(late, items[i])
		}
	}
	return late, nil
}

// confirm removes the published items from the lane's pending list.
func (p *planStore) confirm(ctx context.Context, key string, items []proto.WorkItem) error {
	done := make(map[string]bool, len(items))
	for _, it := range items {
		done[it.SlotID] = true
	}
	for {
		st, rev, err := p.get(ctx, key)
		if err != nil {
			return err
		}
		if st == nil {
			return fmt.Errorf("confirming slots of %s: plan checkpoint vanished", key)
		}
		kept := st.Pending[:0:0]
		for _, it := range st.Pending {
			if !done[it.SlotID] {
				kept = append(kept, it)
			}
		}
		if len(kept) == len(st.Pending) {
			return nil
		}
		st.Pending = kept
		if _, err := p.put(ctx, key, st, rev); err != nil {
			if errors.Is(err, errConflict) {
				continue
			}
			return err
		}
		return nil
	}
}

// newItem builds the work item of one slot.
func newItem(ln config.Lane, st *proto.Plan, start, end int64, lane string, now time.Time) proto.WorkItem {
	it := proto.WorkItem{
		V:                  proto.SchemaVersion,
		Input:              ln.Input,
		Service:            ln.Service,
		Seq:                st.NextSeq,
		Start:              start,
		End:                end,
		PersistenceVersion: st.PersistenceVersion,
		Epoch:              st.Epoch,
		PlannedAt:          now.UnixMilli(),
	}
	it.SlotID = proto.SlotID(ln.Input, ln.Service, start, end, st.PersistenceVersion, lane)
	st.NextSeq++
	return it
}

// initialPlan is a lane's first checkpoint: it starts at start_time_in_utc_format, or one window
// before now (windowed) / at the next period (snapshots) when no start time is configured.
func initialPlan(ln config.Lane, now time.Time) *proto.Plan {
	st := &proto.Plan{
		V:                  proto.SchemaVersion,
		NextSeq:            1,
		StartConfig:        ln.Svc.StartTimeInUTCFormat,
		PersistenceVersion: ln.Svc.PersistenceVersion,
		Epoch:              1,
	}
	st.Cursor = startCursor(ln, now)
	return st
}

func startCursor(ln config.Lane, now time.Time) int64 {
	if ln.Svc.Snapshot {
		return 0
	}
	if !ln.Svc.StartTime.IsZero() {
		return ln.Svc.StartTime.UnixMilli()
	}
	return now.Add(-ln.Svc.Window).Truncate(time.Minute).UnixMilli()
}

// StreamUsage reports how full a stream is: the bytes it holds and its MaxBytes (0: no limit).
// JetStreamUsage implements it for a JetStream connection.
type StreamUsage interface {
	Usage(ctx context.Context, stream string) (bytes, maxBytes uint64, err error)
}

// JetStreamUsage reads a stream's usage from its info.
type JetStreamUsage struct{ JS jetstream.JetStream }

// Usage returns the stream's stored bytes and MaxBytes (0 when unlimited).
func (u JetStreamUsage) Usage(ctx context.Context, stream string) (uint64, uint64, error) {
	s, err := u.JS.Stream(ctx, stream)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the usage of stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the usage of stream %s: %w", stream, err)
	}
	return info.State.Bytes, uint64(max(info.Config.MaxBytes, 0)), nil
}

// fullShare is the share of the results stream's MaxBytes at which planning stops. The stream
// discards new messages when full, so workers would fail to publish behind a head slot the
// shipper cannot deliver; stopping short of it leaves room for the slots already planned.
const fullShare = 0.9

// usageRecheck is how long a reading of the results stream's (or the storage's) usage serves
// before it is read again.
const usageRecheck = time.Second

// resultsFull reports whether the results stream is nearly full. It logs and sets
// dtfleet_coordinator_planning_paused when planning stops or resumes. A usage that cannot be read
// does not stop planning (the stream's own limit still pushes back on the workers); it is logged
// at debug level.
func (c *Coordinator) resultsFull(ctx context.Context) bool {
	if c.usage == nil {
		return false
	}
	// The results stream is shared by every lane, and a leader at its backlog limit plans
	// again every 50 ms: one stream-info request per usageRecheck serves every lane's check.
	now := c.clock.Now()
	if !c.usageAt.IsZero() && now.Sub(c.usageAt) < usageRecheck {
		return c.paused
	}
	c.usageAt = now
	used, limit, err := c.usage.Usage(ctx, proto.StreamResults)
	if err != nil {
		c.logger.Debug("checking how full the results stream is", "err", err)
		return false
	}
	full := limit > 0 && float64(used) >= fullShare*float64(limit)
	if full != c.paused {
		c.paused = full
		if full {
			c.logger.Error("the results stream is nearly full; planning stops until the shippers deliver (check the outputs and failed slots at the head of each lane)",
				"stream", proto.StreamResults, "bytes", used, "max_bytes", limit, "stop_at", fmt.Sprintf("%.0f%%", fullShare*100))
			c.metrics.paused.WithLabelValues(proto.StreamResults).Set(1)
		} else {
			c.logger.Info("the results stream has room again; planning resumes", "stream", proto.StreamResults, "bytes", used, "max_bytes", limit)
			c.metrics.paused.WithLabelValues(proto.StreamResults).Set(0)
		}
	}
	return full
}
