package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/status"
)

// pollEvery is how often Running.WaitFor reads the fleet's state, and readTimeout bounds each read.
const (
	pollEvery   = 100 * time.Millisecond
	readTimeout = 5 * time.Second
)

// Running is a fleet started by Start: its bus, its progress and its stop.
type Running struct {
	// Bus is the fleet's provisioned bus; it is closed once the fleet stopped.
	Bus *bus.Bus

	f      *Fleet
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, set before done closes
	once   sync.Once
}

// Start runs f in the background and returns once its bus is provisioned, or with Run's error
// when it stopped before that, or ctx's. f.Hooks.OnBus is chained, not replaced. The caller must
// call Stop.
func Start(ctx context.Context, f Fleet) (*Running, error) {
	busc := make(chan *bus.Bus, 1)
	prev := f.Hooks.OnBus
	f.Hooks.OnBus = func(b *bus.Bus) {
		if prev != nil {
			prev(b)
		}
		busc <- b
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &Running{f: &f, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = f.Run(rctx)
	}()
	select {
	case r.Bus = <-busc:
		return r, nil
	case <-r.done:
		cancel()
		return nil, r.err
	case <-ctx.Done():
		cancel()
		<-r.done
		return nil, ctx.Err()
	}
}

// Done is closed once the fleet stopped; Err then says why.
func (r *Running) Done() <-chan struct{} { return r.done }

// Err is Run's result once Done is closed, nil before.
func (r *Running) Err() error {
	select {
	case <-r.done:
		return r.err
	default:
		return nil
	}
}

// Stop stops the fleet and returns Run's result once every role has exited. Calling it again
// returns the same result.
func (r *Running) Stop() error {
	r.once.Do(r.cancel)
	<-r.done
	return r.err
}

// Status reads the fleet's state (status.Read) as of now.
func (r *Running) Status(ctx context.Context) (*status.Status, error) {
	return status.Read(ctx, r.Bus, r.f.Config, time.Now())
}

// WaitFor reads the fleet's state until done says so and returns nil; or returns an error when
// ctx ends (naming the last read error, if any: a cluster electing leaders answers with errors
// for a while, so one failed read does not end the wait) or when the fleet stopped.
func (r *Running) WaitFor(ctx context.Context, done func(*status.Status) bool) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var lastErr error
	for {
		// Each read has its own deadline: a request whose reply is lost (a node that died) would
		// otherwise wait for the whole wait's deadline.
		rctx, cancelRead := context.WithTimeout(ctx, readTimeout)
		st, err := r.Status(rctx)
		cancelRead()
		if err == nil && done(st) {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("%w (last error reading the fleet's state: %v)", ctx.Err(), lastErr)
			}
			return ctx.Err()
		case <-r.done:
			if r.err == nil {
				return errors.New("the fleet stopped before the wait ended")
			}
			return fmt.Errorf("the fleet stopped before the wait ended: %w", r.err)
		case <-tick.C:
		}
	}
}

// WaitCaughtUp waits until every windowed lane delivered up to end and every snapshot lane once.
func (r *Running) WaitCaughtUp(ctx context.Context, end time.Time) error {
	return r.WaitFor(ctx, func(st *status.Status) bool { return st.CaughtUp(end) })
}
