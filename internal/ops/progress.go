package ops

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/progress"
	"github.com/dtfleet/dtfleet/internal/status"
)

// pollEvery is how often progress is read from the fleet's checkpoints, and readTimeout bounds
// each read (a cluster electing leaders answers with errors for a while: a failed read is
// skipped, not fatal).
const (
	pollEvery   = 500 * time.Millisecond
	readTimeout = 5 * time.Second
)

// Show says where progress goes: a bar on a terminal, plain lines elsewhere, or, with JSON logs
// (Logger set), structured records through the logger so that the log stays one JSON object a
// line.
type Show struct {
	W        io.Writer // stderr, usually
	Terminal bool      // W is a terminal: draw a bar
	// Logger, when set, receives progress as records instead of lines on W (--log-format json).
	Logger *slog.Logger
	// Every is the period of plain lines and records (default progress.DefaultEvery).
	Every time.Duration
}

// ShowOn is how progress shows on w (stderr) given the log format: through logger when the
// logs are JSON, else a bar when w is a terminal, else plain lines.
func ShowOn(w io.Writer, logger *slog.Logger, jsonLogs bool) Show {
	if jsonLogs {
		return Show{W: w, Logger: logger}
	}
	return Show{W: w, Terminal: progress.IsTerminal(w)}
}

func (s Show) reporter(label string, total int) *progress.Reporter {
	return progress.New(s.W, total, progress.Options{Terminal: s.Terminal && s.Logger == nil, Label: label, Every: s.Every, Logger: s.Logger})
}

// runReporter starts rep's periodic lines and returns the function that stops them (and waits).
func runReporter(ctx context.Context, rep *progress.Reporter) (stop func()) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = rep.Run(rctx) }()
	return func() { cancel(); <-done }
}

// readEvery calls fn with the fleet's state every pollEvery (reads that fail are skipped) until
// fn returns true, and returns nil then, or ctx's error.
func readEvery(ctx context.Context, src status.KVSource, cfg *config.Config, fn func(*status.Status) bool) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		st, err := status.Read(rctx, src, cfg, time.Now())
		cancel()
		if err == nil && fn(st) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func findLane(st *status.Status, input, service string) (status.Lane, bool) {
	for _, l := range st.Lanes {
		if l.Input == input && l.Service == service {
			return l, true
		}
	}
	return status.Lane{}, false
}

// replayDone is how many of the n replayed slots first..first+n-1 the lane delivered.
func replayDone(l status.Lane, first uint64, n int) int {
	if l.DeliveredSeq < first {
		return 0
	}
	return min(int(l.DeliveredSeq-first+1), n)
}

// slotsBehind is how many whole windows of ln lie between what l delivered (its start time
// when nothing was) and now, beyond the two windows and one period a caught-up lane is
// normally behind (the window in progress, the one being delivered, the coordinator's tick). It
// is 0 for a caught-up lane, a snapshot lane, and a lane starting from now.
func slotsBehind(ln config.Lane, l status.Lane, now time.Time) int {
	if ln.Svc.Snapshot || ln.Svc.Window <= 0 {
		return 0
	}
	from := l.DeliveredUntil
	if from.IsZero() {
		from = ln.Svc.StartTime
	}
	if from.IsZero() {
		return 0
	}
	lag := now.Sub(from) - 2*ln.Svc.Window - ln.Svc.Period
	if lag <= 0 {
		return 0
	}
	return int((lag + ln.Svc.Window - 1) / ln.Svc.Window)
}

// backfill is the progress of a backfilling run: the lanes that were behind at its first read,
// from where each stood then.
type backfill struct {
	lanes  map[string]config.Lane
	base   map[string]status.Lane // each backfilling lane at the first read
	caught map[string]bool
}

// newBackfill returns the backfill of st's lanes that are behind at now, or nil when none is.
func newBackfill(cfg *config.Config, st *status.Status, now time.Time) *backfill {
	b := &backfill{lanes: map[string]config.Lane{}, base: map[string]status.Lane{}, caught: map[string]bool{}}
	for _, ln := range cfg.Lanes() {
		if l, ok := findLane(st, ln.Input, ln.Service); ok && slotsBehind(ln, l, now) > 0 {
			b.lanes[ln.Key()], b.base[ln.Key()] = ln, l
		}
	}
	if len(b.lanes) == 0 {
		return nil
	}
	return b
}

// laneProgress is one backfilling lane at a read.
type laneProgress struct {
	ln              config.Lane
	planned, done   uint64 // the lane's planned sequence; slots delivered since the first read
	behind          int
	events          int64
	newlyCaughtUp   bool
	alreadyCaughtUp bool
}

// update reads st into per-lane progress and the totals: slots delivered since the first read,
// the estimated total (delivered + still behind), events delivered since, and whether every
// lane caught up.
func (b *backfill) update(st *status.Status, now time.Time) (lanes []laneProgress, done, total int, events int64, all bool) {
	all = true
	for key, ln := range b.lanes {
		l, ok := findLane(st, ln.Input, ln.Service)
		if !ok {
			continue
		}
		base := b.base[key]
		p := laneProgress{ln: ln, planned: l.PlannedSeq, alreadyCaughtUp: b.caught[key]}
		if l.DeliveredSeq > base.DeliveredSeq {
			p.done = l.DeliveredSeq - base.DeliveredSeq
		}
		if l.Events > base.Events {
			p.events = int64(l.Events - base.Events)
		}
		p.behind = slotsBehind(ln, l, now)
		if p.behind == 0 && !b.caught[key] {
			b.caught[key], p.newlyCaughtUp = true, true
		}
		if !b.caught[key] {
			all = false
		}
		done += int(p.done)
		total += int(p.done) + p.behind
		events += p.events
		lanes = append(lanes, p)
	}
	return lanes, done, total, events, all
}

// Backfill shows the progress of a backfilling run read from src every pollEvery: slots
// delivered against the estimated total over the lanes that were behind at the first read,
// events, rate and time left, as s says. Every s.Every (default progress.DefaultEvery) it logs
// the Devo collector's "Number of processed time slots so far: N" per backfilling lane with its
// planned and delivered sequence. It stops showing and returns nil once every such lane caught
// up (at once when none was behind), or when ctx ends.
func Backfill(ctx context.Context, src status.KVSource, cfg *config.Config, s Show, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	every := s.Every
	if every <= 0 {
		every = progress.DefaultEvery
	}
	var (
		b       *backfill
		rep     *progress.Reporter
		stop    = func() {}
		lastLog time.Time
	)
	defer func() { stop() }()
	err := readEvery(ctx, src, cfg, func(st *status.Status) bool {
		now := time.Now()
		if b == nil {
			if b = newBackfill(cfg, st, now); b == nil {
				return true // caught up already: nothing to show
			}
			logger.Info("backfilling", "lanes", len(b.lanes))
			rep = s.reporter("slots delivered (backfill)", 0)
			stop = runReporter(ctx, rep)
			lastLog = now
		}
		lanes, done, total, events, all := b.update(st, now)
		rep.Set(done, total, events)
		logNow := now.Sub(lastLog) >= every
		if logNow {
			lastLog = now
		}
		for _, p := range lanes {
			lg := logger.With("input", p.ln.Input, "service", p.ln.Service)
			switch {
			case p.newlyCaughtUp:
				lg.Info(fmt.Sprintf("Number of processed time slots so far: %d", p.done), "planned_seq", p.planned, "events", p.events, "caught_up", true)
			case logNow && !p.alreadyCaughtUp:
				lg.Info(fmt.Sprintf("Number of processed time slots so far: %d", p.done), "planned_seq", p.planned, "events", p.events, "slots_behind", p.behind)
			}
		}
		if all {
			stop()
			stop = func() {}
			rep.Finish()
			logger.Info("backfill done: every lane caught up", "slots", done, "events", events)
		}
		return all
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// RunFleet runs f (fleet.Fleet.Run) and, once its bus is up, shows its backfill's progress
// (Backfill) as s says, logging through f's logger. It returns Run's result once Run and the
// progress both stopped; the progress never stops the fleet.
func RunFleet(ctx context.Context, f *fleet.Fleet, s Show) error {
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: the progress stops, then is waited for
	prev := f.Hooks.OnBus
	f.Hooks.OnBus = func(b *bus.Bus) {
		if prev != nil {
			prev(b)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Backfill returns nil when ctx ends; an error here is only about the progress.
			_ = Backfill(pctx, b, f.Config, s, f.Deps.Logger)
		}()
	}
	return f.Run(ctx)
}
