// Package shipper delivers results to Devo. Per lane (input, service) exactly one shipper is
// active, through a lease; others wait as standby. The active shipper delivers slots in sequence
// order and, inside a slot, in the event-time order the worker sorted them in; it drops events
// whose key it delivered before, and it moves the delivery checkpoint only after every output
// confirmed the batch and the batch's dedupe keys are stored. A crash therefore resends at most
// the batch in flight (DESIGN.md guarantees 1–3).
//
// Memory stays bounded when results arrive out of order: result payloads stay in JetStream until
// their turn; the shipper holds only the small done markers of undelivered slots (bounded by the
// coordinator's max_slots_ahead), one batch of events and, per lane, the raw chunks it reads
// ahead while it sends a batch (at most Options.BatchBytes of stored, compressed, chunk data plus
// the chunk being read).
//
// It may import proto, internal/config, internal/lease and shipper/devo; it never imports the
// other roles (coordinator, worker), which it meets only on the bus, and it declares the
// interfaces it uses (ports.go) so that its tests fake them.
package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// Options configure a Shipper. The zero value of every field is a usable default.
type Options struct {
	Logger *slog.Logger
	// Clock paces the lanes and the retries and stamps checkpoints (default the real clock).
	Clock clockwork.Clock
	// Registerer receives the shipper's metrics (default: none are exported). Two shippers may
	// share one registerer; they then share the metrics.
	Registerer prometheus.Registerer
	// ID names this shipper in its leases (default: a name made from the clock).
	ID string
	// Outputs receive every event. The shipper serialises Sends per output.
	Outputs []devo.Output
	// BatchBytes is the event bytes gathered before a delivery is confirmed (default 4 MiB);
	// BatchEvents caps the events (default 20000). Smaller batches resend less after a crash;
	// bigger ones confirm less often. BatchBytes also bounds each lane's read-ahead: the stored
	// (compressed) bytes of the chunks it reads while the lane sends and records a batch.
	BatchBytes  int
	BatchEvents int
	// Backoff returns a fresh retry policy; each lane takes its own, as policies are stateful. It
	// paces retries of a failed delivery; a batch is never dropped. Default devo.NewBackoff.
	Backoff func() backoff.BackOff
	// OnDelivered, when set, is called after each slot's delivery is checkpointed (tests, demo).
	OnDelivered func(d proto.Done, delivered int)
}

// Shipper runs one lane runner per lane of the configuration.
type Shipper struct {
	bus     Bus
	lanes   []config.Lane
	outs    []*lockedOutput
	opts    Options
	logger  *slog.Logger
	ttl     time.Duration
	metrics *metrics

	runners []*laneRunner // set by Run before any lane starts; read by Blocked
	runMu   sync.Mutex
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

// New builds a shipper for cfg's lanes on b, whose fields must all be set.
func New(b Bus, cfg *config.Config, opts Options) (*Shipper, error) {
	if len(opts.Outputs) == 0 {
		return nil, errors.New("creating shipper: no output enabled")
	}
	if b.Results == nil || b.Checkpoints == nil || b.Dedupe == nil || b.Failed == nil || b.Leases == nil {
		return nil, errors.New("creating shipper: incomplete bus")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.ID == "" {
		opts.ID = fmt.Sprintf("shipper-%d", opts.Clock.Now().UnixNano())
	}
	if opts.BatchBytes <= 0 {
		opts.BatchBytes = 4 << 20
	}
	if opts.BatchEvents <= 0 {
		opts.BatchEvents = 20000
	}
	if opts.Backoff == nil {
		opts.Backoff = devo.NewBackoff
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("creating shipper: %w", err)
	}
	s := &Shipper{bus: b, lanes: cfg.Lanes(), opts: opts, logger: opts.Logger.With("role", "shipper"),
		ttl: time.Duration(max(cfg.Shipper.LeaseTTLInSeconds, 1)) * time.Second, metrics: m}
	for _, o := range opts.Outputs {
		s.outs = append(s.outs, &lockedOutput{Output: o})
	}
	return s, nil
}

// Run delivers every lane it holds the lease of until ctx ends, and stands by for the others. A
// lane that finds its lease lost (another shipper moved its checkpoint) stands by again; a lane's
// NATS errors, at start-up or while delivering, are retried with backoff. Run returns after every
// lane stopped.
func (s *Shipper) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, ln := range s.lanes {
		logger := s.logger.With("input", ln.Input, "service", ln.Service)
		l := s.bus.Leases.Lease(proto.ShipperLease(ln.Input, ln.Service), s.opts.ID, s.ttl, logger)
		lr := &laneRunner{
			s: s, ln: ln, lease: l, logger: logger,
			retain:  retention(ln),
			backoff: s.opts.Backoff(),
			leader:  s.metrics.leader.WithLabelValues("shipper", ln.Key()),
			events:  s.metrics.events.WithLabelValues(ln.Input, ln.Service),
			dups:    s.metrics.dups.WithLabelValues(ln.Input, ln.Service),
		}
		s.runMu.Lock()
		s.runners = append(s.runners, lr)
		s.runMu.Unlock()
		g.Go(func() error {
			return l.Hold(gctx, func() { lr.logger.Info("shipper lease acquired; delivering") }, lr.lead)
		})
	}
	return g.Wait()
}

// Blocked returns an error naming the lanes whose current delivery (a batch sent to every output,
// retries included) has been under way for longer than bound on the shipper's clock, or nil. A
// standby lane sends nothing, so it is never blocked. It is safe for concurrent use with Run.
func (s *Shipper) Blocked(bound time.Duration) error {
	now := s.opts.Clock.Now()
	s.runMu.Lock()
	defer s.runMu.Unlock()
	var errs []error
	for _, r := range s.runners {
		if since := r.sendingSince.Load(); since != 0 {
			if d := now.Sub(time.Unix(0, since)); d > bound {
				errs = append(errs, fmt.Errorf("shipper lane %s has been retrying a delivery for %s", r.ln.Key(), d.Round(time.Second)))
			}
		}
	}
	return errors.Join(errs...)
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
