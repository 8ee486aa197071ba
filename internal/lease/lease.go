// Package lease implements leader leases on a JetStream KV bucket whose TTL is at least the lease TTL.
// One holder at a time: acquiring is KeyValue.Create (fails while the key lives), renewing is
// KeyValue.Update with the last revision (fails if anyone else wrote the key), releasing deletes
// the key with a revision check, and a dead holder's key expires with the bucket's TTL, so a
// standby takes over within one TTL.
//
// It may import proto, and no role package.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/proto"
)

// ErrLost is returned when a held lease was taken or expired.
var ErrLost = errors.New("lease lost")

// KV is the part of a JetStream KV bucket a lease uses; jetstream.KeyValue implements it. The
// bucket's TTL expires a dead holder's key (see New for how it relates to the lease TTL). Create must fail with
// jetstream.ErrKeyExists while the key lives, Update with jetstream.ErrKeyRevisionMismatch (or
// ErrKeyNotFound once it expired) unless last is the key's current revision, and Delete with
// LastRevision must delete only that revision.
type KV interface {
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, last uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

// Option tunes a Lease beyond its required parameters.
type Option func(*Lease)

// WithClock makes the lease read time from, and wait on, clock (default: the real clock).
func WithClock(clock clockwork.Clock) Option {
	return func(l *Lease) {
		if clock != nil {
			l.clock = clock
		}
	}
}

// Lease is one named lease. It is not safe for concurrent use, except Valid.
type Lease struct {
	kv     KV
	key    string
	holder string
	ttl    time.Duration
	clock  clockwork.Clock
	logger *slog.Logger
	host   string // this process's host name and pid, written into the value for status
	pid    int

	mu      sync.Mutex
	rev     uint64
	renewed time.Time
	held    bool
}

// New returns a lease on key in kv, held under the name holder; its value also carries this
// process's host name and pid, so that status can say where the leader runs. The bucket's TTL must be at least
// ttl: the holder renews every ttl/3 and stops acting as the leader after ttl/2 without a
// confirmed renewal, so a key that outlives ttl only delays a standby, while one that expired
// sooner could let two holders act at once (bus.SettingsFor sizes the bucket so).
func New(kv KV, key, holder string, ttl time.Duration, logger *slog.Logger, opts ...Option) *Lease {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname() // best effort: the lease works without it
	l := &Lease{kv: kv, key: key, holder: holder, ttl: ttl, clock: clockwork.NewRealClock(), logger: logger, host: host, pid: os.Getpid()}
	for _, o := range opts {
		o(l)
	}
	return l
}

func (l *Lease) value() []byte {
	now := l.clock.Now().UnixMilli()
	b, _ := proto.Encode(&proto.Lease{V: proto.SchemaVersion, Holder: l.holder, Acquired: now, Renewed: now, Host: l.host, PID: l.pid})
	return b
}

// callTimeout bounds each KV call of the lease: half a TTL, at least a second. A call that takes
// longer cannot keep the lease valid anyway (Valid needs a renewal within half a TTL), and an
// unbounded one would keep Hold from noticing that its lease lapsed.
func (l *Lease) callTimeout() time.Duration { return max(l.ttl/2, time.Second) }

// TryAcquire takes the lease if nobody holds it. It reports whether this holder now holds it. The
// KV call waits at most half a TTL (at least a second).
func (l *Lease) TryAcquire(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout())
	defer cancel()
	rev, err := l.kv.Create(ctx, l.key, l.value())
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
		return false, fmt.Errorf("acquiring lease %s: %w", l.key, err)
	}
	l.mu.Lock()
	l.rev, l.renewed, l.held = rev, l.clock.Now(), true
	l.mu.Unlock()
	return true, nil
}

// Renew extends a held lease. It returns ErrLost when another holder wrote the key or it expired.
// The KV call waits at most half a TTL (at least a second).
func (l *Lease) Renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout())
	defer cancel()
	l.mu.Lock()
	rev := l.rev
	l.mu.Unlock()
	nrev, err := l.kv.Update(ctx, l.key, l.value(), rev)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound) {
			l.mu.Lock()
			l.held = false
			l.mu.Unlock()
			return fmt.Errorf("renewing lease %s: %w", l.key, ErrLost)
		}
		return fmt.Errorf("renewing lease %s: %w", l.key, err)
	}
	l.mu.Lock()
	l.rev, l.renewed = nrev, l.clock.Now()
	l.mu.Unlock()
	return nil
}

// Valid reports whether the lease is held and was renewed recently enough that no other holder
// can have taken it (within half a TTL). Writers check it before acting as the leader.
func (l *Lease) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held && l.clock.Now().Sub(l.renewed) < l.ttl/2
}

// Release gives the lease up so a standby can take over at once. The KV call waits at most half
// a TTL (at least a second); a release that fails leaves the key to expire with the bucket's TTL.
func (l *Lease) Release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.callTimeout())
	defer cancel()
	l.mu.Lock()
	rev, held := l.rev, l.held
	l.held = false
	l.mu.Unlock()
	if !held {
		return
	}
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev)); err != nil {
		l.logger.Debug("releasing lease", "key", l.key, "err", err)
	}
}

// Hold waits until it holds the lease, then runs fn with a context that is cancelled when the
// lease is lost or ctx ends, renewing the lease every TTL/3 meanwhile. After fn returns it
// releases the lease. The lease is lost when a renewal finds the key taken or expired, when no
// renewal succeeded for half a TTL, or when fn returns an error wrapping ErrLost (fn found that
// another holder acted, e.g. a revision-checked write of the leader's state failed). After a loss
// Hold stands by: it waits one poll interval (a quarter TTL, at least 50 ms), so that a holder
// that acted meanwhile can keep the lease, then competes for the lease again.
// Hold returns nil when ctx ends, or fn's error if fn fails otherwise while the lease is held. It
// returns only after fn returned.
func Hold(ctx context.Context, l *Lease, onAcquire func(), fn func(ctx context.Context) error) error {
	poll := max(l.ttl/4, 50*time.Millisecond)
	for {
		ok, err := l.TryAcquire(ctx)
		if err != nil && ctx.Err() == nil {
			l.logger.Warn("lease acquisition failed, retrying", "key", l.key, "err", err)
		}
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-l.clock.After(poll):
				continue
			}
		}
		if onAcquire != nil {
			onAcquire()
		}
		lost, err := runHeld(ctx, l, fn)
		if ctx.Err() != nil {
			return nil
		}
		if !lost && err != nil && !errors.Is(err, ErrLost) {
			return err
		}
		l.logger.Warn("lease lost; standing by", "key", l.key, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-l.clock.After(poll):
		}
	}
}

func runHeld(ctx context.Context, l *Lease, fn func(ctx context.Context) error) (lost bool, err error) {
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(hctx) }()
	tick := l.clock.NewTicker(max(l.ttl/3, 20*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			l.Release(rctx)
			rcancel()
			return false, err
		case <-tick.Chan():
			if rerr := l.Renew(hctx); rerr != nil {
				if errors.Is(rerr, ErrLost) {
					cancel()
					<-done
					return true, rerr
				}
				l.logger.Warn("lease renewal failed", "key", l.key, "err", rerr)
				if !l.Valid() {
					// Without a confirmed renewal for half a TTL another holder may take over;
					// stop acting as the leader before that can happen.
					cancel()
					<-done
					l.mu.Lock()
					l.held = false
					l.mu.Unlock()
					return true, rerr
				}
			}
		}
	}
}
