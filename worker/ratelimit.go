package worker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// FleetLimiter spaces requests to one appliance at 1/rps across every worker process: each request
// reserves the next free instant in a KV key with a revision-checked update (so two processes can
// never reserve the same instant), then waits for it. Within a process, reservations are
// serialised so that the CAS only races with other processes.
//
// The stored instant comes from the host clock of whichever worker wrote it, so a host whose
// clock runs ahead would otherwise push every other worker's next request out by its skew. A
// stored instant further ahead of this host's now than the fleet can legitimately queue
// (maxQueued requests at 1/rps, at least minAhead) is treated as stale: this host takes the slot at its own now and
// overwrites it. The wait is therefore bounded by maxAhead whatever any host's clock says;
// while hosts disagree the spacing between them is only approximate, never a stall.
//
// At a high rate one CAS (a KV read and an fsynced update) per request would cap the rate below
// the ceiling, so a process reserves batch consecutive instants per CAS (as many as fall in
// batchSpan at the rate; one below 100 requests/s) and hands them out locally in order. An
// instant that passed more than one interval ago unused (the process had no request for it) is
// dropped, never used late: used late it would bunch with the fleet's later instants. So no more
// than the ceiling's requests start in any one-second window, within one interval.
type FleetLimiter struct {
	kv       RateStore
	key      string
	interval time.Duration
	batch    int
	clock    clockwork.Clock
	mu       sync.Mutex
	next     int64 // the next instant of this process's batch, unix ns
	left     int   // instants of the batch not handed out yet
}

// batchSpan is how much time one reservation's batch covers at most: short enough that an idle
// process wastes little of the fleet's rate, long enough that the CAS is no bottleneck (at 1000
// requests/s, one CAS per 20 requests).
const batchSpan = 20 * time.Millisecond

// maxBatch bounds a batch far below maxQueued, so the skew protection still tells a batch from a
// skewed writer's instant.
const maxBatch = 64

// RateStore is the KV bucket of fleet-wide request reservations; jetstream.KeyValue implements
// it. Get returns jetstream.ErrKeyNotFound for a key never written; Create fails with
// jetstream.ErrKeyExists when the key exists, Update with jetstream.ErrKeyRevisionMismatch unless
// last is the key's current revision: that check is what keeps two processes from reserving the
// same instant.
type RateStore interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error)
}

// NewFleetLimiter returns a limiter for one input; rps <= 0 means unlimited. clock is what it
// reads time from and waits on (nil: the real clock).
func NewFleetLimiter(kv RateStore, input string, rps float64, clock clockwork.Clock) darktrace.Limiter {
	if rps <= 0 {
		return darktrace.NewLocalLimiter(0)
	}
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	batch := min(max(int(rps*batchSpan.Seconds()), 1), maxBatch)
	return &FleetLimiter{kv: kv, key: input, interval: time.Duration(float64(time.Second) / rps), batch: batch, clock: clock}
}

// maxQueued is how many requests the fleet may queue ahead of now on one appliance: more than
// the fetch goroutines of a large fleet (workers × fetchers), far less than an hour of skew at
// any sensible rate. A stored instant beyond it is a skewed writer's, not a queue.
const maxQueued = 256

// minAhead is the least of maxAhead: at a high rate maxQueued requests are only a fraction of a
// second, fewer than a fleet of adaptive workers may queue (workers × workers.concurrency), and a
// queue taken for skew would be reset, bunching requests beyond the ceiling. Two seconds of
// queue is still far less than any skew worth protecting against.
const minAhead = 2 * time.Second

// maxAhead is the furthest ahead of this host's now a reservation may legitimately lie.
func (l *FleetLimiter) maxAhead() int64 { return max(maxQueued*int64(l.interval), int64(minAhead)) }

// Wait reserves the next request instant for this input and sleeps until it.
func (l *FleetLimiter) Wait(ctx context.Context) error {
	at, err := l.reserve(ctx)
	if err != nil {
		return err
	}
	d := at.Sub(l.clock.Now())
	if d <= 0 {
		return nil
	}
	t := l.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.Chan():
		return nil
	}
}

// reserve returns the next request instant of this process: the next of its batch, or the first
// of a new batch reserved in the bucket.
func (l *FleetLimiter) reserve(ctx context.Context) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now().UnixNano()
	for l.left > 0 && l.next < now-int64(l.interval) {
		l.next += int64(l.interval) // passed unused: dropped, not used late
		l.left--
	}
	if l.left == 0 {
		at, err := l.reserveBatch(ctx)
		if err != nil {
			return time.Time{}, err
		}
		l.next, l.left = at.UnixNano(), l.batch
	}
	at := l.next
	l.next += int64(l.interval)
	l.left--
	return time.Unix(0, at), nil
}

// reserveBatch reserves l.batch consecutive instants in the bucket and returns the first.
func (l *FleetLimiter) reserveBatch(ctx context.Context) (time.Time, error) {
	for {
		var next int64
		var rev uint64
		e, err := l.kv.Get(ctx, l.key)
		switch {
		case err == nil:
			rev = e.Revision()
			if len(e.Value()) == 8 {
				next = int64(binary.BigEndian.Uint64(e.Value()))
			}
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			return time.Time{}, fmt.Errorf("reading rate reservation of %s: %w", l.key, err)
		}
		now := l.clock.Now().UnixNano()
		if next-now > l.maxAhead() {
			next = 0 // written by a host whose clock is ahead: stale here, take it over
		}
		at := max(now, next)
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], uint64(at+int64(l.batch)*int64(l.interval)))
		if rev == 0 {
			_, err = l.kv.Create(ctx, l.key, buf[:])
		} else {
			_, err = l.kv.Update(ctx, l.key, buf[:], rev)
		}
		if err == nil {
			return time.Unix(0, at), nil
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		return time.Time{}, fmt.Errorf("reserving a request of %s: %w", l.key, err)
	}
}
