package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// retryCheck is how often the leader looks for failed slots whose retry is due.
const retryCheck = time.Second

// applianceOffset returns the appliance's clock minus this coordinator's for input, or 0 when no
// worker recorded an observation yet (planning by the host's clock is what dtfleet did before it
// knew better).
//
// A record's offset is relative to the clock of the worker that wrote it, which need not agree
// with this host's: a worker an hour ahead records -1h, one ten minutes behind +10m, and applying
// those to this host's clock would stop planning for an hour or plan ten minutes into the
// appliance's future (events not yet visible, lost). So the record is read as the appliance's
// own time at the observation (the worker's time plus its offset: the worker's clock cancels
// out), anchored at this coordinator's time when it first read that revision. The appliance's
// time then advances with this host's clock from there. A record written a while before it is
// first read makes the estimate late by that age, never early: planning waits a little, until
// the next observation (every answer of every fetch, at least every 30 s on a busy worker)
// corrects it. A record that cannot be read keeps the last anchor.
func (c *Coordinator) applianceOffset(ctx context.Context, input string) time.Duration {
	c.clockMu.Lock()
	defer c.clockMu.Unlock()
	last, known := c.anchors[input]
	e, err := c.rate.Get(ctx, proto.ClockKey(input))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
			c.logger.Debug("reading the appliance's clock offset", "input", input, "err", err)
		}
		return last.offset
	}
	if known && e.Revision() == last.rev {
		return last.offset
	}
	var off proto.ClockOffset
	if err := proto.Decode(e.Value(), &off); err != nil {
		c.logger.Debug("reading the appliance's clock offset", "input", input, "err", err)
		return last.offset
	}
	appliance := time.UnixMilli(off.At + off.OffsetMS)
	a := clockAnchor{rev: e.Revision(), offset: appliance.Sub(c.clock.Now())}
	c.anchors[input] = a
	return a.offset
}

// clockAnchor is the last clock observation of an input the coordinator read: its revision in
// the rate bucket, and the appliance's time at the observation minus this coordinator's time
// when it read it.
type clockAnchor struct {
	rev    uint64
	offset time.Duration
}

// RetryFailed replays every failed slot whose NextRetry has come, as a new slot at the end of its
// lane. Before publishing, it moves the record's NextRetry on (revision-checked, so two leaders
// cannot both schedule it) to when the retry after this one would be due: if this retry is lost
// (a crash before the publish), the slot is retried then; if it fails, the worker's new record
// sets the next retry; if it is delivered, the shipper deletes the record.
func (c *Coordinator) RetryFailed(ctx context.Context) error {
	lister, err := c.failed.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("listing failed slots: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	lanes := map[string]config.Lane{}
	for _, ln := range c.lanes {
		lanes[ln.Key()] = ln
	}
	now := c.clock.Now()
	for _, k := range keys {
		e, err := c.failed.Get(ctx, k)
		if err != nil {
			continue // delivered meanwhile
		}
		var rec proto.Failure
		if err := proto.Decode(e.Value(), &rec); err != nil {
			c.logger.Warn("unreadable failure record; leaving it", "key", k, "err", err)
			continue
		}
		ln, ok := lanes[proto.LaneKey(rec.Input, rec.Service)]
		if !ok || ln.Svc.Snapshot || rec.NextRetry == 0 || now.UnixMilli() < rec.NextRetry {
			continue
		}
		retry := rec.Retries + 1
		rec.NextRetry = now.Add(c.coord.RetryDelay(retry) + c.coord.RetryDelay(0)).UnixMilli()
		data, err := proto.Encode(&rec)
		if err != nil {
			return err
		}
		rev, err := c.failed.Update(ctx, k, data, e.Revision())
		if err != nil {
			continue // changed meanwhile (a new failure, a delivery): look again next time
		}
		it, err := c.reserveRetry(ctx, ln, rec, retry, rev)
		if err != nil {
			return fmt.Errorf("retrying failed slot %s: %w", k, err)
		}
		c.logger.Info(fmt.Sprintf("Retrying failed time slot >> %s - %s automatically (retry %d)", proto.FormatMS(rec.Start), proto.FormatMS(rec.End), retry),
			"input", rec.Input, "service", rec.Service, "seq", it.Seq, "failed_seq", rec.Seq, "last_error", rec.Error,
			"next_retry_if_it_fails", proto.FormatMS(rec.NextRetry))
		c.metrics.planned.WithLabelValues(ln.Input, ln.Service).Inc()
	}
	return nil
}

// reserveRetry reserves, publishes and confirms one replay of rec's window at the end of ln,
// with the reserve–publish–confirm protocol of planned slots. Its slot ID names the retry and
// the record's revision, so that each scheduling is a slot of its own (no sequence number is
// ever left without a publish).
func (c *Coordinator) reserveRetry(ctx context.Context, ln config.Lane, rec proto.Failure, retry int, rev uint64) (proto.WorkItem, error) {
	key := proto.LaneKey(ln.Input, ln.Service)
	for guard := 0; guard < 100; guard++ {
		st, srev, err := c.plans.get(ctx, key)
		if err != nil {
			return proto.WorkItem{}, err
		}
		if st == nil {
			return proto.WorkItem{}, fmt.Errorf("lane %s has never been planned", key)
		}
		lane := fmt.Sprintf("e%d/retry-%d-r%d", st.Epoch, retry, rev)
		it := newItem(ln, st, rec.Start, rec.End, lane, c.clock.Now())
		it.Replay, it.Retry = true, retry
		st.Pending = append(st.Pending, it)
		if _, err := c.plans.put(ctx, key, st, srev); err != nil {
			if errors.Is(err, errConflict) {
				continue
			}
			return proto.WorkItem{}, err
		}
		items := []proto.WorkItem{it}
		if err := c.plans.publish(ctx, items); err != nil {
			return it, fmt.Errorf("%w (the reserved slot stays pending; the coordinator publishes it)", err)
		}
		return it, c.plans.confirm(ctx, key, items)
	}
	return proto.WorkItem{}, fmt.Errorf("reserving a retry of %s: too many concurrent updates", key)
}
