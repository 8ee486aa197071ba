// Package ops runs the operating commands that read or change a fleet's state on the bus
// without running a role: status (and its --check grade), failed list/clear and replay. Each
// connects with fleet.ConnectClient, which never opens a store a running process holds, and
// closes the connection before it returns. cmd/dtfleet parses the flags and calls these.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/inspect"
	"github.com/dtfleet/dtfleet/internal/progress"
	"github.com/dtfleet/dtfleet/internal/status"
)

// Env is what every operating command works with.
type Env struct {
	Config *config.Config
	Logger *slog.Logger
	Out    io.Writer // where results are printed
	// Show is where progress goes (replay's wait); its zero value shows none.
	Show Show
}

// withBus runs fn with a client connection to e's bus, closed when fn returns.
func (e Env) withBus(ctx context.Context, fn func(*bus.Bus) error) error {
	b, err := fleet.ConnectClient(ctx, e.Config, e.Logger)
	if err != nil {
		return err
	}
	defer b.Close()
	return fn(b)
}

// StatusOptions say how Status reports.
type StatusOptions struct {
	JSON   bool          // print JSON instead of the table
	Check  bool          // print status.Check's findings instead, and return its grade
	MaxLag time.Duration // with Check: the lag above which a lane is lagging
}

// Status prints the fleet's status. With o.Check it returns the grade as code
// (status.CheckHealthy ... status.CheckUnreachable; unreachable when the bus or the store cannot
// be read); otherwise code is 0 and err says what failed.
func Status(ctx context.Context, e Env, o StatusOptions) (code int, err error) {
	err = e.withBus(ctx, func(b *bus.Bus) error {
		st, err := status.Read(ctx, b, e.Config, time.Now())
		switch {
		case err != nil:
			return err
		case o.Check:
			var reasons []string
			code, reasons = status.Check(st, o.MaxLag)
			for _, r := range reasons {
				fmt.Fprintln(e.Out, r)
			}
			if code == status.CheckHealthy {
				fmt.Fprintln(e.Out, "OK")
			}
			return nil
		case o.JSON:
			return encodeJSON(e.Out, st)
		}
		status.Print(e.Out, st)
		return nil
	})
	if err != nil && o.Check {
		return status.CheckUnreachable, err
	}
	return code, err
}

// FailedList prints every failure record with the command that replays (and so clears) it.
func FailedList(ctx context.Context, e Env, asJSON bool) error {
	return e.withBus(ctx, func(b *bus.Bus) error {
		fs, err := status.ListFailed(ctx, b)
		if err != nil {
			return err
		}
		if asJSON {
			return encodeJSON(e.Out, fs)
		}
		status.PrintFailed(e.Out, fs)
		return nil
	})
}

// Selector picks failure records: All, or those whose Key is in Keys, or (no Keys) those of
// Input and Service where each is set.
type Selector struct {
	All            bool
	Keys           []string
	Input, Service string
}

// ErrNoSelector is returned by FailedClear for a Selector that selects nothing explicitly.
var ErrNoSelector = errors.New("failed clear: name KEYs, --input/--service, or --all")

func (s Selector) match(f status.FailedSlot) bool {
	if s.All || slices.Contains(s.Keys, f.Key) {
		return true
	}
	return len(s.Keys) == 0 && (s.Input == "" || f.Input == s.Input) && (s.Service == "" || f.Service == s.Service)
}

// FailedClear deletes the failure records sel picks and prints them.
func FailedClear(ctx context.Context, e Env, sel Selector) error {
	if !sel.All && len(sel.Keys) == 0 && sel.Input == "" && sel.Service == "" {
		return ErrNoSelector
	}
	return e.withBus(ctx, func(b *bus.Bus) error {
		cleared, err := status.ClearFailed(ctx, b, sel.match)
		fmt.Fprintf(e.Out, "cleared %d failure record(s)\n", len(cleared))
		status.PrintFailed(e.Out, cleared)
		return err
	})
}

// ReplayOptions name the window to replay; From and To are RFC 3339, with milliseconds where a
// failed slot's window has them.
type ReplayOptions struct {
	Input, Service, From, To string
	Force                    bool
	// NoWait returns once the slots are republished, without waiting for their delivery.
	NoWait bool
}

// Replay republishes the slots of o's window (coordinator.Replay) and prints what it did. Then,
// unless o.NoWait, it waits until the lane delivered them, showing progress as e.Show says; a
// lane no shipper holds (no fleet running) is not waited for: its slots are delivered once one
// runs. Stopping the wait (ctx) stops nothing in the fleet: the slots are republished already
// and are delivered all the same.
func Replay(ctx context.Context, e Env, o ReplayOptions) error {
	from, err := time.Parse(time.RFC3339, o.From)
	if err != nil {
		return fmt.Errorf("--from %q is not an RFC 3339 time: %w", o.From, err)
	}
	to, err := time.Parse(time.RFC3339, o.To)
	if err != nil {
		return fmt.Errorf("--to %q is not an RFC 3339 time: %w", o.To, err)
	}
	ln, err := inspect.FindLane(e.Config, o.Input, o.Service)
	if err != nil {
		return err
	}
	return e.withBus(ctx, func(b *bus.Bus) error {
		items, err := coordinator.Replay(ctx, b, b.JS, ln, from, to, coordinator.ReplayOptions{Force: o.Force, Logger: e.Logger})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.Out, "republished %d slots of %s.%s (seq %d-%d), force=%v\n",
			len(items), ln.Input, ln.Service, items[0].Seq, items[len(items)-1].Seq, o.Force)
		if o.NoWait {
			return nil
		}
		return e.waitReplay(ctx, b, ln, items[0].Seq, len(items))
	})
}

// waitReplay waits until ln delivered its n slots from first, with progress.
func (e Env) waitReplay(ctx context.Context, b *bus.Bus, ln config.Lane, first uint64, n int) error {
	var (
		rep    *progress.Reporter
		stop   = func() {}
		events uint64
		idle   bool
	)
	defer func() { stop() }()
	err := readEvery(ctx, b, e.Config, func(st *status.Status) bool {
		l, ok := findLane(st, ln.Input, ln.Service)
		if !ok {
			return false
		}
		if rep == nil {
			if l.Shipper == "" {
				idle = true
				return true
			}
			events = l.Events
			rep = e.Show.reporter("replayed slots delivered", n)
			if e.Show.W != nil {
				stop = runReporter(ctx, rep)
			}
		}
		done := replayDone(l, first, n)
		rep.Set(done, n, int64(l.Events-min(events, l.Events)))
		return done >= n
	})
	switch {
	case idle:
		fmt.Fprintf(e.Out, "no shipper holds %s now (is a fleet running?): the slots are delivered once one does\n", ln.Key())
		return nil
	case err != nil:
		return fmt.Errorf("stopped waiting for the replay; its slots stay republished and are delivered all the same: %w", err)
	}
	stop()
	stop = func() {}
	if e.Show.W != nil {
		rep.Finish()
	}
	fmt.Fprintf(e.Out, "delivered %d replayed slots of %s\n", n, ln.Key())
	return nil
}

func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
