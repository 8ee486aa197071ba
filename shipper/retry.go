package shipper

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/dtfleet/dtfleet/shipper/devo"
)

// retry calls op until it succeeds or ctx ends, waiting between attempts as a fresh policy of the
// shipper's says, on its clock. It returns nil once op succeeded, or ctx's error.
func (r *laneRunner) retry(ctx context.Context, what string, op func() error) error {
	var bo backoff.BackOff
	for {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !r.pause(ctx, &bo, what+" failed; retrying", err) {
			return ctx.Err()
		}
	}
}

// recordDelivered runs write, a write that records a batch every output confirmed (its dedupe
// record, the checkpoint), until it succeeds. The batch is not sent again meanwhile: only the
// write is retried, with backoff. Each attempt has its own deadline and runs even if ctx already
// ended, so a graceful stop still records the batch it delivered; retries stop when ctx ends (the
// lease was lost or the shipper stops), and the next leader then resends at most this batch, the
// bound of a crash. An error wrapping errLeaseLost is not retried: another shipper moved the lane.
func (r *laneRunner) recordDelivered(ctx context.Context, what string, write func(ctx context.Context) error) error {
	var bo backoff.BackOff
	for {
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), kvTimeout)
		err := write(wctx)
		cancel()
		if err == nil || errors.Is(err, errLeaseLost) || ctx.Err() != nil {
			return err
		}
		if !r.pause(ctx, &bo, what+" failed after every output confirmed the batch; retrying the write alone", err) {
			return err
		}
	}
}

// pause logs err and waits the next interval of *bo (a fresh policy of the shipper's on first
// use; maxRetryWait once it gives up) on the shipper's clock. It reports false if ctx ended first.
func (r *laneRunner) pause(ctx context.Context, bo *backoff.BackOff, msg string, err error) bool {
	if *bo == nil {
		*bo = r.s.opts.Backoff()
		(*bo).Reset()
	}
	wait := (*bo).NextBackOff()
	if wait == backoff.Stop {
		wait = maxRetryWait
	}
	r.logger.Warn(msg, "err", err, "in", wait)
	select {
	case <-ctx.Done():
		return false
	case <-r.s.opts.Clock.After(wait):
		return true
	}
}

// send delivers the batch to every output; it returns only when all confirmed, or ctx ended.
func (r *laneRunner) send(ctx context.Context, batch *devo.Batch) error {
	if len(batch.Events) == 0 {
		return nil
	}
	if !r.lease.Valid() {
		return fmt.Errorf("sending a batch: %w", errLeaseLost)
	}
	// Readiness (Shipper.Blocked) reports a lane whose batch has been retried for too long.
	r.sendingSince.Store(r.s.opts.Clock.Now().UnixNano())
	defer r.sendingSince.Store(0)
	for _, o := range r.s.outs {
		if err := devo.RetryGrace(ctx, stopGrace, o, batch, r.backoff, r.s.opts.Clock, r.logger); err != nil {
			return err
		}
		r.s.metrics.batches.WithLabelValues(o.Name()).Inc()
	}
	return nil
}

// stopGrace is how long a graceful stop lets a delivery attempt already under way finish. Cutting
// it would leave the part of the batch Devo had read to be sent again after the restart; letting
// it finish means a graceful stop resends nothing (only a crash resends the batch in flight).
const stopGrace = 10 * time.Second
