package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// classify returns err's class for a slot, with the bound on transient errors applied: a
// Transient error counts as Terminal once the slot has been failing with transient errors for
// transientFor (counted in this process, from the slot's first such failure). A malformed body
// (darktrace.KindMalformed) is retryable, but one malformed on every attempt must not stop the
// lane for good: it is bounded like a Transient error, and fleet-wide by maxMalformedDeliveries
// (the item's delivery count, which every worker sees). Errors that are not the appliance's
// (*darktrace.Error absent: a bus hiccup) are retryable.
func (w *Worker) classify(it proto.WorkItem, err error, delivered uint64) (darktrace.Class, time.Duration) {
	if err == nil {
		return 0, 0
	}
	c := darktrace.ClassOf(err)
	var dtErr *darktrace.Error
	malformed := errors.As(err, &dtErr) && dtErr.Kind == darktrace.KindMalformed
	if malformed && delivered >= maxMalformedDeliveries {
		return darktrace.Terminal, 0
	}
	if c != darktrace.Transient && !malformed {
		return c, 0
	}
	now := w.clock.Now()
	w.mu.Lock()
	first, ok := w.firstFailed[it.SlotID]
	if !ok {
		first = now
		if len(w.firstFailed) > 100_000 {
			// Entries of slots settled by other processes are never forgotten here; drop the
			// oldest half of the bound's worth rather than grow without limit.
			for k, t := range w.firstFailed {
				if now.Sub(t) > 2*w.transientFor {
					delete(w.firstFailed, k)
				}
			}
		}
		w.firstFailed[it.SlotID] = first
	}
	w.mu.Unlock()
	failingFor := now.Sub(first)
	if w.transientFor <= 0 {
		return darktrace.Terminal, failingFor
	}
	if malformed {
		if failingFor >= w.transientFor {
			return darktrace.Terminal, failingFor
		}
		return darktrace.Retryable, failingFor
	}
	return darktrace.ClassAfter(err, failingFor, w.transientFor), failingFor
}

// maxMalformedDeliveries is how many attempts a slot whose body is malformed every time gets
// before it is recorded as failed (and retried later by the coordinator, like any failed slot).
const maxMalformedDeliveries = 10

// newerItemDeliveries bounds how long a work item of a newer schema version (a rolling upgrade)
// is left for a newer process: delivered this often (newerItemDelay apart, about an hour) with
// no newer worker taking it, it is recorded as failed, so the lane goes on and the coordinator's
// automatic retry replans it in the version this fleet writes.
const (
	newerItemDeliveries = 120
	newerItemDelay      = 30 * time.Second
)

// newerItem handles a work item written by a newer build (proto.ErrSchema): it is never
// terminated, since a newer worker can process it; it is Nak'ed with a delay and logged once
// per slot. Past newerItemDeliveries it is recorded as a failed slot with the error, so the
// lane never has a hole.
func (w *Worker) newerItem(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, it proto.WorkItem, cause error) {
	log := w.logger.With("subject", msg.Subject(), "version", it.V, "known_version", proto.SchemaVersion, "seq", it.Seq)
	if meta.NumDelivered < newerItemDeliveries || it.SlotID == "" || it.Input == "" || it.Service == "" {
		if meta.NumDelivered == 1 || meta.NumDelivered%newerItemDeliveries == 0 {
			log.Warn("work item of a newer version; leaving it for a newer worker", "attempt", meta.NumDelivered)
		}
		_ = msg.NakWithDelay(newerItemDelay)
		return
	}
	err := fmt.Errorf("no worker of version %d took the slot after %d deliveries: %w", it.V, meta.NumDelivered, cause)
	it.V = proto.SchemaVersion
	attempt := strconv.FormatUint(meta.NumDelivered, 10)
	if ferr := w.fail(ctx, it, attempt, meta.NumDelivered, err, w.nextRetry(it)); ferr != nil {
		log.Warn("recording the failed slot; retrying it", "err", ferr)
		_ = msg.NakWithDelay(newerItemDelay)
		return
	}
	log.Error("work item of a newer version was not taken by a newer worker; the slot is recorded as failed", "err", err)
	w.metrics.slots.WithLabelValues(it.Input, it.Service, resultFailed).Inc()
	_ = msg.TermWithReason("newer version, recorded as failed")
}

// forget drops a settled slot's transient-failure record.
func (w *Worker) forget(slotID string) {
	w.mu.Lock()
	delete(w.firstFailed, slotID)
	w.mu.Unlock()
}

// nextRetry is when the coordinator replays a slot that failed now, or zero when failed slots
// are not retried automatically.
func (w *Worker) nextRetry(it proto.WorkItem) time.Time {
	if !w.coord.RetriesFailed() {
		return time.Time{}
	}
	return w.clock.Now().Add(w.coord.RetryDelay(it.Retry))
}

// keepAlive sends in-progress acks every AckWait/3 until stop is called, so a long fetch is not
// redelivered to another worker.
func (w *Worker) keepAlive(ctx context.Context, msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := w.clock.NewTicker(w.opts.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.Chan():
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// fail records a slot that failed for good and publishes its failed marker.
func (w *Worker) fail(ctx context.Context, it proto.WorkItem, attempt string, attempts uint64, cause error, next time.Time) error {
	rec := proto.Failure{V: proto.SchemaVersion, SlotID: it.SlotID, Input: it.Input, Service: it.Service, Seq: it.Seq,
		Start: it.Start, End: it.End, Error: cause.Error(), Attempts: attempts, Worker: w.opts.ID, At: w.clock.Now().UnixMilli(),
		Retries: it.Retry}
	if !next.IsZero() {
		rec.NextRetry = next.UnixMilli()
	}
	data, err := proto.Encode(&rec)
	if err != nil {
		return err
	}
	if _, err := w.ep.Failures.Put(ctx, proto.FailedKey(it.Input, it.Service, it.Start, it.End), data); err != nil {
		return fmt.Errorf("writing failure record: %w", err)
	}
	d := w.done(it, attempt, 0, 0)
	d.Failed, d.Error = true, cause.Error()
	return w.publishDone(ctx, d)
}
