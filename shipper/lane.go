package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/lease"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// laneRunner delivers one lane while its shipper holds the lane's lease.
type laneRunner struct {
	s       *Shipper
	ln      config.Lane
	dedupe  *dedupeSet
	lease   Lease
	logger  *slog.Logger
	retain  int64
	backoff backoff.BackOff // this lane's retry policy (policies are stateful)

	leader       prometheus.Gauge
	events, dups prometheus.Counter

	mu      sync.Mutex
	markers map[uint64]proto.Done
	newer   map[uint64]*newerMarker // markers of a newer schema version, by slot, while none of this version came
	notify  chan struct{}

	st           proto.Delivery
	rev          uint64
	deliveredSeq atomic.Uint64 // st.Seq, for the marker callback
	sendingSince atomic.Int64  // unix nanoseconds the batch being sent was first tried at; 0 when none

	// ahead reads the chunks the lane needs next while it sends and records a batch; set by run
	// for its duration (before the marker watch starts, cleared after it stopped).
	ahead *readAhead

	// chunkBufs are decompression buffers of chunks whose events were sent, reused for the next
	// batch's chunks (a batch's events point into them until its Send returns); decoded is the
	// chunk being read, whose events array is reused the same way.
	chunkBufs [][]byte
	usedBufs  [][]byte
	decoded   proto.Chunk
	// inBatch, batchKeys and batchEvents are the gathering batch's, kept for the next one so
	// that a batch does not grow them anew.
	inBatch     map[string]bool
	batchKeys   []string
	batchEvents []devo.Event

	cycleTotal, cycleDups int
	cycleStart            time.Time

	// forced holds the keys delivered by the run of forced (replay --force) slots the lane is in.
	// A forced replay bypasses the dedupe set, so that the range is delivered again, but each
	// event of it once: its slots' look-back windows overlap one another. The run ends at the
	// next slot that is not forced.
	forced map[string]bool
	// forcedEnd is the window end of the last forced slot whose keys are in forced: a forced
	// slot that starts before it begins another replay (of the same range, say), which must be
	// delivered again, not deduplicated against the first.
	forcedEnd int64
}

// errLeaseLost stops a lane whose checkpoint someone else moved.
var errLeaseLost = errors.New("delivery checkpoint moved by another shipper")

// kvTimeout bounds every call the lane makes to NATS (KV reads and writes, chunk reads, purges):
// a call that hangs (a stream leader lost mid-request) fails and is retried instead of pinning
// the lane.
const kvTimeout = 10 * time.Second

// maxRetryWait caps a wait between retries when the retry policy gives up (backoff.Stop): the
// lane never gives up while it holds its lease.
const maxRetryWait = time.Minute

// lead runs the lane while this shipper holds its lease.
func (r *laneRunner) lead(ctx context.Context) error {
	r.leader.Set(1)
	defer r.leader.Set(0)
	return r.run(ctx)
}

// run delivers the lane from its checkpoint until ctx ends. It returns after its marker watch
// stopped: nil when ctx ended, or an error wrapping lease.ErrLost when another shipper moved the
// checkpoint (the lease then stands by). Every other error, at start-up or while delivering, is
// logged and retried.
func (r *laneRunner) run(ctx context.Context) error {
	// Another shipper may have led the lane since this one last did: start from what the bus
	// holds, not from what this process remembers.
	r.dedupe = newDedupeSet(r.s.bus.Dedupe, r.ln.Input, r.ln.Service)
	r.forced, r.forcedEnd = nil, 0
	r.markers = map[uint64]proto.Done{}
	r.newer = map[uint64]*newerMarker{}
	r.notify = make(chan struct{}, 1)
	// The read-ahead's goroutine ends before run returns: its context is cancelled and waited for
	// after the marker watch stopped (defers run last in, first out).
	r.ahead = newReadAhead(r.s.opts.BatchBytes, r.marker, r.readChunk)
	actx, cancelAhead := context.WithCancel(ctx)
	var ahead sync.WaitGroup
	ahead.Go(func() { r.ahead.run(actx) })
	defer func() {
		cancelAhead()
		ahead.Wait()
		r.ahead = nil // its chunks are not kept while standing by
	}()
	var stop func()
	err := r.retry(ctx, "starting the lane", func() error {
		if err := r.loadCheckpoint(ctx); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, kvTimeout)
		defer cancel()
		var err error
		stop, err = r.s.bus.Results.WatchDone(wctx, r.ln.Input, r.ln.Service, r.onMarker)
		return err
	})
	if err != nil {
		return nil // ctx ended
	}
	defer stop()
	// The ticker is a safety net: markers normally wake the lane through notify.
	tick := r.s.opts.Clock.NewTicker(time.Second)
	defer tick.Stop()
	for {
		progressed, err := r.deliverReady(ctx)
		if err != nil {
			if errors.Is(err, errLeaseLost) {
				return fmt.Errorf("%w: %w", lease.ErrLost, err)
			}
			if ctx.Err() != nil {
				return nil
			}
			r.logger.Warn("delivery failed; retrying", "err", err)
		}
		if progressed {
			continue
		}
		r.logCycle()
		select {
		case <-ctx.Done():
			return nil
		case <-r.notify:
		case <-tick.Chan():
		}
	}
}

func (r *laneRunner) loadCheckpoint(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	value, rev, err := r.s.bus.Checkpoints.Get(ctx, proto.LaneKey(r.ln.Input, r.ln.Service))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		r.st, r.rev = proto.Delivery{V: proto.SchemaVersion}, 0
		r.deliveredSeq.Store(0)
		return nil
	case err != nil:
		return fmt.Errorf("reading delivery checkpoint of %s: %w", r.ln.Key(), err)
	}
	var st proto.Delivery
	if err := proto.Decode(value, &st); err != nil {
		return fmt.Errorf("reading delivery checkpoint of %s: %w", r.ln.Key(), err)
	}
	r.st, r.rev = st, rev
	r.deliveredSeq.Store(st.Seq)
	return nil
}

// onMarker records a slot's done marker. The first successful marker of a slot wins, so every
// shipper (and every restart) picks the same attempt; a success replaces a failure of another
// attempt.
func (r *laneRunner) onMarker(subject string, data []byte) {
	var d proto.Done
	err := proto.Decode(data, &d)
	if errors.Is(err, proto.ErrSchema) && d.V > proto.SchemaVersion && d.Seq > r.deliveredSeq.Load() &&
		d.Input == r.ln.Input && d.Service == r.ln.Service {
		// A newer build wrote it: left for a newer shipper, for newerMarkerWait at most (awaitNewer).
		r.mu.Lock()
		if _, ok := r.newer[d.Seq]; !ok {
			r.newer[d.Seq] = &newerMarker{done: d, cause: err, since: r.s.opts.Clock.Now()}
		}
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
		return
	}
	if err != nil {
		r.logger.Error("undecodable done marker; ignoring it", "subject", subject, "err", err)
		return
	}
	if d.Seq <= r.deliveredSeq.Load() {
		return // a late marker of a slot already delivered
	}
	r.mu.Lock()
	old, ok := r.markers[d.Seq]
	if !ok || (old.Failed && !d.Failed) {
		r.markers[d.Seq] = d
	}
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
	r.ahead.poke()
}

func (r *laneRunner) marker(seq uint64) (proto.Done, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.markers[seq]
	return d, ok
}

// unit is one slot's part of a batch.
type unit struct {
	done      proto.Done
	firstSeen int // first chunk of the slot included in this batch
	nextChunk int // chunks of the slot delivered once this batch is
	complete  bool
	delivered int // events of this slot in the batch (after dedupe)
	dups      int
}

// deliverReady gathers one batch from the ready slots at the head of the lane, delivers it and
// moves the checkpoint. It reports whether it made progress. Its chunk reads are mostly served by
// the read-ahead (r.ahead), which reads the next chunks while this sends and records; the
// read-ahead changes no decision taken here (chunk).
func (r *laneRunner) deliverReady(ctx context.Context) (bool, error) {
	next := r.st.Seq + 1
	if _, ok := r.marker(next); !ok {
		return r.awaitNewer(ctx, next)
	}
	var (
		units    []*unit
		batch    = &devo.Batch{Tag: r.ln.Svc.Tag, Events: r.batchEvents[:0]}
		keys     = r.batchKeys[:0]
		inBatch  = r.inBatch
		bytes    int // event bytes in the batch
		read     int // event bytes read from the results, duplicates included
		minStart = int64(1<<63 - 1)
		maxEnd   int64
		epoch    uint64
		part     []byte // an event split across chunks, being reassembled
		// forcedTo is the window end of the forced slots gathered so far: a forced slot that
		// starts before it is another replay run, which gets a batch of its own.
		forcedTo int64
	)
	full := func() bool { return bytes >= r.s.opts.BatchBytes || len(batch.Events) >= r.s.opts.BatchEvents }
	// Once this returns, nothing holds the batch's events (outputs do not keep them after Send),
	// nor its keys (the dedupe set copies them): their memory serves the next batch.
	if inBatch == nil {
		inBatch = map[string]bool{}
		r.inBatch = inBatch
	}
	clear(inBatch)
	defer func() {
		r.recycleChunkBufs()
		clear(batch.Events)
		clear(keys)
		r.batchEvents, r.batchKeys = batch.Events[:0], keys[:0]
	}()
	for seq := next; !full(); seq++ {
		d, ok := r.marker(seq)
		if !ok {
			break
		}
		if len(units) > 0 && d.Epoch != epoch {
			break // a batch's dedupe record belongs to one epoch
		}
		if len(units) > 0 && d.Force && d.Start < forcedTo {
			break
		}
		if d.Force {
			forcedTo = max(forcedTo, d.End)
		}
		epoch = d.Epoch
		if !d.Force || d.Start < r.forcedEnd {
			r.forced, r.forcedEnd = nil, 0
		}
		u := &unit{done: d}
		units = append(units, u)
		if d.Failed {
			u.complete = true
			continue
		}
		if err := r.dedupe.prepare(ctx, d.Epoch, d.Start, r.retain); err != nil {
			return false, err
		}
		minStart, maxEnd = min(minStart, d.Start), max(maxEnd, d.End)
		if seq == next && r.st.Attempt == d.Attempt {
			u.firstSeen = r.st.NextChunk
		}
		u.nextChunk = u.firstSeen
		for u.nextChunk < d.Chunks && (!full() || part != nil) {
			ch, err := r.chunk(ctx, d, u.nextChunk)
			if errors.Is(err, proto.ErrCorruptChunk) {
				// The stored result itself is broken: reading it again gives the same bytes, so
				// retrying would stop the lane for good. The slot is recorded as failed (and
				// replayable), and the batch is gathered again with the slot passed over.
				if ferr := r.failSlot(ctx, d, "corrupt result: "+err.Error(),
					"a result chunk of the slot does not decode; the slot is recorded as failed and passed over", err); ferr != nil {
					return false, ferr
				}
				return true, nil
			}
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				// Workers publish a slot's chunks before its marker, so a chunk the stream does not
				// hold expired (the stream's MaxAge) or was purged by a shipper that delivered the
				// slot. Retrying cannot bring it back: unless another shipper moved the checkpoint,
				// the slot is recorded as failed, loudly, and replaying its window recovers it.
				if ferr := r.checkpointUnmoved(ctx); ferr != nil {
					return false, ferr
				}
				if ferr := r.failSlot(ctx, d, errResultsExpired,
					"the results of the slot expired before delivery; the slot is recorded as failed and passed over", err); ferr != nil {
					return false, ferr
				}
				return true, nil
			}
			if err != nil {
				return false, err
			}
			for _, ev := range ch.Events {
				if ev.More || part != nil {
					part = append(part, ev.D...)
					if ev.More {
						continue
					}
					ev.D, part = part, nil
				}
				read += len(ev.D)
				if inBatch[ev.K] || (d.Force && r.forced[ev.K]) || (!d.Force && r.dedupe.seen(ev.K)) {
					u.dups++
					continue
				}
				inBatch[ev.K] = true
				keys = append(keys, ev.K)
				batch.Events = append(batch.Events, devo.Event{Time: ev.T, Msg: ev.D})
				bytes += len(ev.D)
				u.delivered++
			}
			u.nextChunk++
		}
		u.complete = u.nextChunk >= d.Chunks
		if !u.complete {
			break
		}
	}
	if err := r.send(ctx, batch); err != nil {
		return false, err
	}
	// Every output confirmed the batch: from here on only the writes that record it are retried,
	// never the send (recordDelivered).
	first := units[0]
	if err := r.recordDelivered(ctx, "storing the batch's dedupe record", func(wctx context.Context) error {
		return r.dedupe.persist(wctx, epoch, minStart, maxEnd, first.done.Seq, first.firstSeen, keys)
	}); err != nil {
		return false, err
	}
	if err := r.recordDelivered(ctx, "moving the delivery checkpoint", func(wctx context.Context) error {
		return r.checkpoint(wctx, units, read)
	}); err != nil {
		return false, err
	}
	r.dedupe.add(keys, maxEnd)
	for _, u := range units {
		if u.done.Force {
			if r.forced == nil {
				r.forced = map[string]bool{}
			}
			for _, k := range keys {
				r.forced[k] = true
			}
			break
		}
	}
	for _, u := range units {
		if u.done.Force {
			r.forcedEnd = max(r.forcedEnd, u.done.End)
		}
	}
	r.finish(context.WithoutCancel(ctx), units)
	return true, nil
}

// chunk reads one chunk of the slot's chosen attempt: the read-ahead's copy when it holds exactly
// that chunk, read without error, else from the results stream.
func (r *laneRunner) chunk(ctx context.Context, d proto.Done, i int) (*proto.Chunk, error) {
	data, encoding, ok := r.ahead.take(ctx, d, i)
	if !ok {
		var err error
		if data, encoding, err = r.readChunk(ctx, d, i); err != nil {
			return nil, err
		}
	}
	var (
		buf []byte
		err error
	)
	if n := len(r.chunkBufs); n > 0 {
		buf, r.chunkBufs = r.chunkBufs[n-1], r.chunkBufs[:n-1]
	}
	buf, err = proto.ReadChunkBuf(buf, data, encoding, &r.decoded)
	if buf != nil {
		r.usedBufs = append(r.usedBufs, buf)
	}
	if err != nil {
		return nil, fmt.Errorf("reading chunk %d of slot %d: %w", i, d.Seq, err)
	}
	return &r.decoded, nil
}

// readChunk reads chunk i of d's attempt from the results stream, without decoding it. It is
// called by the lane and by its read-ahead.
func (r *laneRunner) readChunk(ctx context.Context, d proto.Done, i int) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	data, encoding, err := r.s.bus.Results.Chunk(ctx, d.Input, d.Service, d.Seq, d.Attempt, i)
	if err != nil {
		return nil, "", fmt.Errorf("reading chunk %d of slot %d: %w", i, d.Seq, err)
	}
	return data, encoding, nil
}

// maxChunkBufs bounds the decompression buffers a lane keeps between batches.
const maxChunkBufs = 64

// recycleChunkBufs makes the buffers of the batch just gathered available to the next one.
func (r *laneRunner) recycleChunkBufs() {
	for _, b := range r.usedBufs {
		if len(r.chunkBufs) < maxChunkBufs {
			r.chunkBufs = append(r.chunkBufs, b)
		}
	}
	clear(r.usedBufs)
	r.usedBufs = r.usedBufs[:0]
}

// checkpoint moves the delivery checkpoint past the batch, with a revision check so two
// shippers can never both move it.
func (r *laneRunner) checkpoint(ctx context.Context, units []*unit, read int) error {
	st := r.st
	st.ResultBytes += uint64(read)
	for _, u := range units {
		st.Events += uint64(u.delivered)
		st.Dups += uint64(u.dups)
		if !u.complete {
			st.NextChunk, st.Attempt = u.nextChunk, u.done.Attempt
			continue
		}
		st.Seq, st.NextChunk, st.Attempt = u.done.Seq, 0, ""
		// End says how far the lane has delivered: a replay of an old window, delivered after
		// newer slots, does not move it back (status would show the lane hours behind, and its
		// --check lagging). A new epoch (a persistence reset) starts it anew.
		if u.done.Epoch == st.Epoch {
			st.End = max(st.End, u.done.End)
		} else {
			st.End = u.done.End
		}
		st.Epoch = u.done.Epoch
		if u.done.Failed {
			st.Failed++
		}
	}
	st.V, st.UpdatedAt = proto.SchemaVersion, r.s.opts.Clock.Now().UnixMilli()
	data, err := proto.Encode(&st)
	if err != nil {
		return err
	}
	key := proto.LaneKey(r.ln.Input, r.ln.Service)
	var rev uint64
	if r.rev == 0 {
		rev, err = r.s.bus.Checkpoints.Create(ctx, key, data)
	} else {
		rev, err = r.s.bus.Checkpoints.Update(ctx, key, data, r.rev)
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("moving the delivery checkpoint of %s: %w", r.ln.Key(), errLeaseLost)
		}
		return fmt.Errorf("moving the delivery checkpoint of %s: %w", r.ln.Key(), err)
	}
	r.st, r.rev = st, rev
	r.deliveredSeq.Store(st.Seq)
	for _, u := range units {
		r.events.Add(float64(u.delivered))
		r.dups.Add(float64(u.dups))
	}
	return nil
}

// finish logs and cleans up after the slots the batch completed. Its NATS calls are best effort
// (a purge the stream's limits would do later, a failure record a later replay clears), each
// bounded by kvTimeout.
func (r *laneRunner) finish(ctx context.Context, units []*unit) {
	for _, u := range units {
		r.cycleTotal += u.delivered + u.dups
		r.cycleDups += u.dups
		if r.cycleStart.IsZero() {
			r.cycleStart = r.s.opts.Clock.Now()
		}
		if !u.complete {
			continue
		}
		d := u.done
		if d.Failed {
			r.logger.Error(fmt.Sprintf("Time slot >> %s - %s failed for good and was passed over; it is recorded and can be replayed with: %s",
				slotTime(d.Start), slotTime(d.End), proto.ReplayCommand(d.Input, d.Service, d.Start, d.End)), "seq", d.Seq, "err", d.Error)
		} else {
			r.logger.Info(fmt.Sprintf("Number of events received for time slot >> %s - %s is: %d", slotTime(d.Start), slotTime(d.End), d.Events),
				"seq", d.Seq, "delivered", u.delivered, "duplicates", u.dups)
			if d.Replay {
				// A replay that delivered a window clears that window's failure record.
				dctx, cancel := context.WithTimeout(ctx, kvTimeout)
				_ = r.s.bus.Failed.Delete(dctx, proto.FailedKey(d.Input, d.Service, d.Start, d.End))
				cancel()
			}
		}
		pctx, cancel := context.WithTimeout(ctx, kvTimeout)
		if err := r.s.bus.Results.PurgeSlot(pctx, d.Input, d.Service, d.Seq); err != nil {
			r.logger.Debug("purging a delivered slot's results", "seq", d.Seq, "err", err)
		}
		cancel()
		r.mu.Lock()
		delete(r.markers, d.Seq)
		delete(r.newer, d.Seq)
		r.mu.Unlock()
		if r.s.opts.OnDelivered != nil {
			r.s.opts.OnDelivered(d, u.delivered)
		}
	}
}

// logCycle logs the totals since the lane was last idle, in the form of Devo's collector.
func (r *laneRunner) logCycle() {
	if r.cycleTotal == 0 && r.cycleStart.IsZero() {
		return
	}
	avg := 0.0
	if r.cycleTotal > 0 {
		avg = float64(r.s.opts.Clock.Since(r.cycleStart).Microseconds()) / 1000 / float64(r.cycleTotal)
	}
	if hits, misses := r.ahead.stats(); hits+misses > 0 {
		r.logger.Debug("chunk read-ahead since the lane started", "hits", hits, "misses", misses)
	}
	r.logger.Info(fmt.Sprintf(`Received response, messages(total/duplicated): %d/%d/tag template used: "%s", avg_time_per_source_message: %.3f ms`,
		r.cycleTotal, r.cycleDups, r.ln.Svc.Tag, avg))
	r.cycleTotal, r.cycleDups, r.cycleStart = 0, 0, time.Time{}
}

func slotTime(ms int64) string { return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05-07:00") }
