package shipper

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/proto"
)

// newerMarkerWait bounds how long the lane waits at a slot whose only done marker is of a newer
// schema version (a rolling upgrade): a newer shipper, once it holds the lane's lease, delivers it.
// When none has within this time (about the worker's bound for work items, newerItemDeliveries),
// the slot is recorded as failed at its place and passed over, so the lane never stops for good.
const newerMarkerWait = time.Hour

// newerMarker is a done marker this build cannot read whole, and when the lane first saw it.
type newerMarker struct {
	done   proto.Done // the fields this build knows
	cause  error
	since  time.Time
	logged bool
}

// errResultsExpired is the failure record's error for a slot whose chunks the results stream no
// longer holds (its MaxAge passed before delivery).
const errResultsExpired = "results expired before delivery; replay the window"

// awaitNewer handles a head slot seq that has no done marker of this version. When it has one of a
// newer version, the lane waits for a newer shipper (logged once); after newerMarkerWait the slot
// is recorded as failed at its place and passed over (failSlot). It reports whether the lane can
// make progress now.
func (r *laneRunner) awaitNewer(ctx context.Context, seq uint64) (bool, error) {
	r.mu.Lock()
	n, ok := r.newer[seq]
	if !ok {
		r.mu.Unlock()
		return false, nil
	}
	waited := r.s.opts.Clock.Since(n.since)
	logNow := !n.logged
	n.logged = true
	d, cause := n.done, n.cause
	r.mu.Unlock()
	if waited < newerMarkerWait {
		if logNow {
			r.logger.Warn("done marker of a newer version at the head of the lane; leaving it for a newer shipper",
				"seq", seq, "version", d.V, "known_version", proto.SchemaVersion, "wait", newerMarkerWait)
		}
		return false, nil
	}
	if err := r.checkpointUnmoved(ctx); err != nil {
		return false, err
	}
	d.V, d.Chunks = proto.SchemaVersion, 0
	if err := r.failSlot(ctx, d, fmt.Sprintf("no shipper of version %d delivered the slot within %s: %v", n.done.V, newerMarkerWait, cause),
		"a done marker of a newer version was not taken by a newer shipper; the slot is recorded as failed and passed over", cause); err != nil {
		return false, err
	}
	r.mu.Lock()
	if _, ok := r.markers[seq]; !ok {
		d.Failed = true
		r.markers[seq] = d
	}
	delete(r.newer, seq)
	r.mu.Unlock()
	return true, nil
}

// checkpointUnmoved returns an error wrapping errLeaseLost when the delivery checkpoint is no
// longer the one this lane wrote: another shipper delivered past it, so what this lane would
// record as failed may well have been delivered.
func (r *laneRunner) checkpointUnmoved(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	_, rev, err := r.s.bus.Checkpoints.Get(ctx, proto.LaneKey(r.ln.Input, r.ln.Service))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev = 0
	case err != nil:
		return fmt.Errorf("reading delivery checkpoint of %s: %w", r.ln.Key(), err)
	}
	if rev != r.rev || !r.lease.Valid() {
		return fmt.Errorf("checking the delivery checkpoint of %s: %w", r.ln.Key(), errLeaseLost)
	}
	return nil
}

// failSlot records slot d as failed for good with the error errText (a chunk that does not
// decode, results that expired, a marker no newer shipper took), logs msg loudly, then replaces
// its marker by a failed one, so the lane passes over it and goes on. The failure record is what
// status, "failed" and replay show.
func (r *laneRunner) failSlot(ctx context.Context, d proto.Done, errText, msg string, cause error) error {
	rec := proto.Failure{V: proto.SchemaVersion, SlotID: d.SlotID, Input: d.Input, Service: d.Service, Seq: d.Seq,
		Start: d.Start, End: d.End, Error: errText, Attempts: 1, Worker: d.Worker,
		At: r.s.opts.Clock.Now().UnixMilli()}
	data, err := proto.Encode(&rec)
	if err != nil {
		return fmt.Errorf("encoding the failure record of slot %d: %w", d.Seq, err)
	}
	wctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	if err := r.s.bus.Failed.Put(wctx, proto.FailedKey(d.Input, d.Service, d.Start, d.End), data); err != nil {
		return fmt.Errorf("recording slot %d as failed (%s): %w", d.Seq, errText, err)
	}
	r.logger.Error(msg, "seq", d.Seq, "attempt", d.Attempt, "replay", proto.ReplayCommand(d.Input, d.Service, d.Start, d.End), "err", cause)
	d.Failed, d.Error = true, rec.Error
	r.mu.Lock()
	if cur, ok := r.markers[d.Seq]; ok && cur.Attempt == d.Attempt {
		r.markers[d.Seq] = d
	}
	r.mu.Unlock()
	return nil
}
