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
// (maxQueued requests at 1/rps) is treated as stale: this host takes the slot at its own now and
// overwrites it. The wait is therefore bounded by maxQueued/rps whatever any host's clock says;
// while hosts disagree the spacing between them is only approximate, never a stall.
type FleetLimiter struct {
	kv       RateStore
	key      string
	interval time.Duration
	clock    clockwork.Clock
	mu       sync.Mutex
}

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
	return &FleetLimiter{kv: kv, key: input, interval: time.Duration(float64(time.Second) / rps), clock: clock}
}

// maxQueued is how many requests the fleet may queue ahead of now on one appliance: more than
// the fetch goroutines of a large fleet (workers × fetchers), far less than an hour of skew at
// any sensible rate. A stored instant beyond it is a skewed writer's, not a queue.
const maxQueued = 256

// maxAhead is the furthest ahead of this host's now a reservation may legitimately lie.
func (l *FleetLimiter) maxAhead() int64 { return maxQueued * int64(l.interval) }

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

func (l *FleetLimiter) reserve(ctx context.Context) (time.Time, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
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
		binary.BigEndian.PutUint64(buf[:], uint64(at+int64(l.interval)))
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
