package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// ErrSnapshotReplay is returned for a replay of a snapshot service, which has no history.
var ErrSnapshotReplay = errors.New("snapshot services (status, summarystatistics) have no history to replay")

// ReplayOptions configure Replay.
type ReplayOptions struct {
	Force  bool // the shipper bypasses dedupe for these slots
	Logger *slog.Logger
	Clock  clockwork.Clock // what PlannedAt and the checkpoint's UpdatedAt are read from (default: the real clock)
}

// Replay republishes the lane's slots covering [from, to) in steps of the lane's window, as new
// sequence numbers at the end of the lane (so order is kept) and under fresh slot IDs. It uses the
// same reserve–publish–confirm protocol as the coordinator, so a crash mid-replay leaves pending
// slots that the coordinator publishes. It returns the slots it published.
func Replay(ctx context.Context, b Bus, pub Publisher, ln config.Lane, from, to time.Time, opts ReplayOptions) ([]proto.WorkItem, error) {
	if ln.Svc.Snapshot {
		return nil, fmt.Errorf("replaying %s.%s: %w", ln.Input, ln.Service, ErrSnapshotReplay)
	}
	if !from.Before(to) {
		return nil, fmt.Errorf("replaying %s.%s: --from %s is not before --to %s", ln.Input, ln.Service, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	clock := opts.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	kv, err := b.KV(ctx, proto.BucketPlan)
	if err != nil {
		return nil, err
	}
	ps := &planStore{kv: kv, pub: pub, clock: clock, logger: logger}
	key := proto.LaneKey(ln.Input, ln.Service)
	label := "replay-" + uuid.NewString()
	var items []proto.WorkItem
	for {
		st, rev, err := ps.get(ctx, key)
		if err != nil {
			return nil, err
		}
		if st == nil {
			return nil, fmt.Errorf("replaying %s.%s: the lane has never been planned (run the fleet first)", ln.Input, ln.Service)
		}
		items = items[:0]
		lane := fmt.Sprintf("e%d/%s", st.Epoch, label)
		window := ln.Svc.Window.Milliseconds()
		for s := from.UnixMilli(); s < to.UnixMilli(); s += window {
			e := min(s+window, to.UnixMilli())
			it := newItem(ln, st, s, e, lane, clock.Now())
			it.Replay, it.Force = true, opts.Force
			items = append(items, it)
		}
		st.Pending = append(st.Pending, items...)
		if _, err := ps.put(ctx, key, st, rev); err != nil {
			if errors.Is(err, errConflict) {
				continue
			}
			return nil, err
		}
		break
	}
	if err := ps.publish(ctx, items); err != nil {
		return nil, fmt.Errorf("replaying %s.%s: %w (the reserved slots stay pending; the coordinator publishes them)", ln.Input, ln.Service, err)
	}
	if err := ps.confirm(ctx, key, items); err != nil {
		return nil, err
	}
	logger.Info(fmt.Sprintf("Total number of time slots to be processed: %d", len(items)), "input", ln.Input, "service", ln.Service, "replay", label, "force", opts.Force)
	return items, nil
}
