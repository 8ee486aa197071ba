package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// clockRefresh is how often an unchanged clock offset is written again, so the coordinator can
// tell a recent observation from an old one.
const clockRefresh = 30 * time.Second

// recordClock stores the appliance's clock offset of input (appliance minus host, from the Date
// header of an answer) in the rate bucket, for the coordinator to plan by. It writes only when
// the offset moved by a second or more, or clockRefresh passed, so a busy worker does not write
// on every request; a failed write is logged at debug level and retried with the next answer.
func (w *Worker) recordClock(ctx context.Context, input string, offset time.Duration) {
	kv, ok := w.ep.Rate.(ClockStore)
	if w.ep.Rate == nil || !ok {
		return
	}
	now := w.clock.Now()
	rec := proto.ClockOffset{V: proto.SchemaVersion, OffsetMS: offset.Milliseconds(), At: now.UnixMilli()}
	w.mu.Lock()
	last, seen := w.clocks[input]
	if seen && abs(last.OffsetMS-rec.OffsetMS) < 1000 && now.UnixMilli()-last.At < clockRefresh.Milliseconds() {
		w.mu.Unlock()
		return
	}
	w.clocks[input] = rec
	w.mu.Unlock()
	data, err := proto.Encode(&rec)
	if err == nil {
		_, err = kv.Put(ctx, proto.ClockKey(input), data)
	}
	if err != nil && ctx.Err() == nil {
		w.logger.Debug("recording the appliance's clock offset", "input", input, "err", err)
		w.mu.Lock()
		delete(w.clocks, input)
		w.mu.Unlock()
	}
}

// ClockStore is the part of the rate bucket the worker records the appliance's clock offset in
// (proto.ClockKey); jetstream.KeyValue implements it. A RateStore without Put records none.
type ClockStore interface {
	Put(ctx context.Context, key string, value []byte) (uint64, error)
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// CheckInputs validates every input's tokens with a cheap call of a service the input runs
// anyway (darktrace.CheckRequest: never a service that is off), as the setup step of Devo's
// collector does. A terminal failure (missing permission, rejected token) is returned, since
// every slot would fail the same way; so is a refused signature (Transient: the caller retries
// the check for a short while before it gives up, since the tokens may have been rotated on the
// appliance a moment ago). A clock off (API DATE ERROR) and a retryable failure (appliance
// unreachable) are logged and the worker starts anyway, retrying its slots with backoff: time
// synchronisation fixes a clock without anyone restarting dtfleet.
func (w *Worker) CheckInputs(ctx context.Context) error {
	for name, f := range w.fetchers {
		req, ok := darktrace.CheckRequest(w.inputs[name], w.clock.Now())
		if !ok {
			continue
		}
		// The Devo collector's setup lines around the token check, which its users grep for.
		setup := w.logger.With("input", name)
		setup.Info("Starting the execution of setup()")
		// A plain fetch whose events are discarded: its answer's Date header also records the
		// appliance's clock before the coordinator plans its first window.
		req.MaxEventSize = w.maxEvent // discarded anyway: never held whole
		st, err := f.Fetch(ctx, req, func([]byte) error { return nil })
		if st.Dated {
			w.recordClock(ctx, name, st.ClockOffset)
		}
		var dtErr *darktrace.Error
		switch {
		case err == nil:
			setup.Info("Tokens have been validated successfully.", "service", req.Service)
			setup.Info("Finalizing the execution of setup()")
			setup.Info("Setup for module <CollectorDarktracePuller> has been successfully executed")
		case errors.As(err, &dtErr) && (dtErr.Class == darktrace.Terminal || dtErr.Kind == darktrace.KindSignature):
			return fmt.Errorf("checking the tokens of input %s: %w", name, err)
		case errors.As(err, &dtErr) && dtErr.Kind == darktrace.KindDate:
			// A clock off is fixed by time synchronisation, not by an operator: the worker starts
			// and retries its slots (transient for workers.transient_errors_for_in_minutes, then
			// failed and retried automatically), so the fleet heals once the clock is right.
			w.logger.Warn("the token check was refused for the request date; starting anyway, slots are retried until the clock is right",
				"input", name, "err", err)
		default:
			w.logger.Warn("the token check could not reach the appliance; starting anyway", "input", name, "err", err)
		}
	}
	return nil
}
