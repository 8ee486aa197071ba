// Package shipper delivers results to Devo. Per lane (input, service) exactly one shipper is
// active, through a lease; others wait as standby. The active shipper delivers slots in sequence
// order and, inside a slot, in the event-time order the worker sorted them in; it drops events
// whose key it delivered before, and it moves the delivery checkpoint only after every output
// confirmed the batch and the batch's dedupe keys are stored. A crash therefore resends at most
// the batch in flight (DESIGN.md guarantees 1–3).
//
// Memory stays bounded when results arrive out of order: result payloads stay in JetStream until
// their turn; the shipper holds only the small done markers of undelivered slots (bounded by the
// coordinator's max_slots_ahead) and one batch of events.
package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/lease"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// Options configure a Shipper.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// ID names this shipper in its leases (default: random).
	ID string
	// Outputs receive every event. The shipper serialises Sends per output.
	Outputs []devo.Output
	// BatchBytes is the event bytes gathered before a delivery is confirmed (default 4 MiB);
	// BatchEvents caps the events (default 20000). Smaller batches resend less after a crash;
	// bigger ones confirm less often.
	BatchBytes  int
	BatchEvents int
	// Backoff paces retries of a failed delivery; a batch is never dropped.
	Backoff devo.Backoff
	// OnDelivered, when set, is called after each slot's delivery is checkpointed (tests, demo).
	OnDelivered func(d proto.Done, delivered int)
}

// Shipper runs one lane runner per lane of the configuration.
type Shipper struct {
	b      *bus.Bus
	lanes  []config.Lane
	outs   []*lockedOutput
	opts   Options
	logger *slog.Logger
	ttl    time.Duration
}

// lockedOutput serialises Sends from several lanes to one output.
type lockedOutput struct {
	mu sync.Mutex
	devo.Output
}

func (o *lockedOutput) Send(ctx context.Context, b *devo.Batch) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.Output.Send(ctx, b)
}

// New builds a shipper for cfg's lanes.
func New(b *bus.Bus, cfg *config.Config, opts Options) (*Shipper, error) {
	if len(opts.Outputs) == 0 {
		return nil, errors.New("creating shipper: no output enabled")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ID == "" {
		opts.ID = fmt.Sprintf("shipper-%d", time.Now().UnixNano())
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 4 << 20
	}
	if opts.BatchEvents <= 0 {
		opts.BatchEvents = 20000
	}
	s := &Shipper{b: b, lanes: cfg.Lanes(), opts: opts, logger: opts.Logger.With("role", "shipper"),
		ttl: time.Duration(max(cfg.Shipper.LeaseTTLInSeconds, 1)) * time.Second}
	for _, o := range opts.Outputs {
		s.outs = append(s.outs, &lockedOutput{Output: o})
	}
	return s, nil
}

// Run delivers every lane it holds the lease of until ctx ends.
func (s *Shipper) Run(ctx context.Context) error {
	kvs := map[string]jetstream.KeyValue{}
	for _, name := range []string{proto.BucketDelivered, proto.BucketDedupe, proto.BucketLeases, proto.BucketFailed} {
		kv, err := s.b.KV(ctx, name)
		if err != nil {
			return err
		}
		kvs[name] = kv
	}
	stream, err := s.b.JS.Stream(ctx, proto.StreamResults)
	if err != nil {
		return fmt.Errorf("opening stream %s: %w", proto.StreamResults, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, ln := range s.lanes {
		lr := &laneRunner{
			s: s, ln: ln, stream: stream,
			delivered: kvs[proto.BucketDelivered], failed: kvs[proto.BucketFailed],
			dedupe: newDedupeSet(kvs[proto.BucketDedupe], ln.Input, ln.Service),
			logger: s.logger.With("input", ln.Input, "service", ln.Service),
			retain: retention(ln),
		}
		l := lease.New(kvs[proto.BucketLeases], proto.ShipperLease(ln.Input, ln.Service), s.opts.ID, s.ttl, lr.logger)
		lr.lease = l
		g.Go(func() error {
			return lease.Hold(gctx, l, func() { lr.logger.Info("shipper lease acquired; delivering") }, lr.run)
		})
	}
	return g.Wait()
}

// retention is how far before a slot's start the lane's dedupe keys are kept in memory: the
// look-back (late breaches come back in later slots) plus a window plus an hour for fuzzy
// boundaries; for snapshots, two periods.
func retention(ln config.Lane) int64 {
	if ln.Svc.Snapshot {
		return 2 * max(ln.Svc.Period, time.Minute).Milliseconds()
	}
	return (ln.Svc.LookBack + ln.Svc.Window + time.Hour).Milliseconds()
}
