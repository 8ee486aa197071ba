// Package progress reports how far a long run (demo, replay, a backfilling run) has come: slots
// done out of the total, events, rate and time left. On a terminal it draws a bar that rewrites
// itself; anywhere else (a log file, journald, a pipe) it writes a plain line every period, with
// no carriage return or escape sequence, so logs stay readable.
package progress

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// DefaultEvery is how often plain lines are written.
const DefaultEvery = 10 * time.Second

// Options configure a Reporter.
type Options struct {
	// Terminal draws a bar; false writes plain lines. IsTerminal(w) is the usual value.
	Terminal bool
	// Label names what is counted, e.g. "slots delivered" (default "slots").
	Label string
	// Every is the period of plain lines (default DefaultEvery).
	Every time.Duration
	// Clock paces plain lines and measures the rate (default the real clock).
	Clock clockwork.Clock
	// Logger, when set, receives each periodic line as a structured Info record ("progress",
	// with slots, total, events, events_per_second and left) instead of a line on w, and no bar
	// is drawn: with JSON logs on stderr, a line of another shape would break the stream.
	Logger *slog.Logger
}

// IsTerminal reports whether w is a terminal (a *os.File on a tty).
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Reporter counts progress and shows it on w. Add is safe for concurrent use.
type Reporter struct {
	w     io.Writer
	total int
	opts  Options
	bar   *progressbar.ProgressBar
	start time.Time

	mu           sync.Mutex
	slots        int
	events       int64
	lastReported int // slots at the last plain line; -1 before the first
}

// New returns a Reporter of total slots writing to w.
func New(w io.Writer, total int, opts Options) *Reporter {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.Every <= 0 {
		opts.Every = DefaultEvery
	}
	if opts.Label == "" {
		opts.Label = "slots"
	}
	r := &Reporter{w: w, total: total, opts: opts, start: opts.Clock.Now(), lastReported: -1}
	if opts.Terminal && opts.Logger == nil {
		r.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(w), progressbar.OptionSetDescription(opts.Label),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("slots"),
			progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetPredictTime(true))
	}
	return r
}

// Add records slots more slots done carrying events events.
func (r *Reporter) Add(slots, events int) {
	r.mu.Lock()
	r.slots += slots
	r.events += int64(events)
	ev := r.events
	r.mu.Unlock()
	if r.bar != nil {
		r.bar.Describe(fmt.Sprintf("%s, %d events", r.opts.Label, ev))
		_ = r.bar.Add(slots)
	}
}

// Set records the progress as a whole: slots done of total, carrying events. It is for progress
// read from the fleet's checkpoints (replay, a backfilling run), where the total is an estimate
// that moves.
func (r *Reporter) Set(slots, total int, events int64) {
	r.mu.Lock()
	add := slots - r.slots
	r.slots, r.total, r.events = slots, total, events
	r.mu.Unlock()
	if r.bar != nil {
		r.bar.ChangeMax(total)
		r.bar.Describe(fmt.Sprintf("%s, %d events", r.opts.Label, events))
		if add > 0 {
			_ = r.bar.Add(add)
		}
	}
}

// Run writes a plain line every period until ctx ends (nothing on a terminal, where Add draws
// the bar), and returns nil once it stopped.
func (r *Reporter) Run(ctx context.Context) error {
	if r.bar != nil {
		<-ctx.Done()
		return nil
	}
	t := r.opts.Clock.NewTicker(r.opts.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
			r.line(false)
		}
	}
}

// Finish completes the bar, or writes a last plain line when anything changed since the last.
func (r *Reporter) Finish() {
	if r.bar != nil {
		_ = r.bar.Finish()
		fmt.Fprintln(r.w)
		return
	}
	r.line(true)
}

// line writes one plain line; unless final, only when some slots were done since the last.
func (r *Reporter) line(final bool) {
	r.mu.Lock()
	slots, total, events := r.slots, r.total, r.events
	changed := slots != r.lastReported
	r.lastReported = slots
	r.mu.Unlock()
	if !changed && !(final && slots == 0) {
		return
	}
	elapsed := r.opts.Clock.Since(r.start)
	if r.opts.Logger != nil {
		attrs := []any{"what", r.opts.Label, "slots", slots, "total", total, "events", events}
		if elapsed > 0 {
			attrs = append(attrs, "events_per_second", float64(events)/elapsed.Seconds())
		}
		if left, ok := timeLeft(slots, total, elapsed); ok {
			attrs = append(attrs, "left", left.String())
		}
		r.opts.Logger.Info("progress", attrs...)
		return
	}
	fmt.Fprintln(r.w, Line(r.opts.Label, slots, total, events, elapsed))
}

// timeLeft is the time the total-slots left take at the rate of the slots so far.
func timeLeft(slots, total int, elapsed time.Duration) (time.Duration, bool) {
	if slots <= 0 || slots >= total || elapsed <= 0 {
		return 0, false
	}
	return time.Duration(float64(elapsed) * float64(total-slots) / float64(slots)).Round(time.Second), true
}

// Line formats one plain progress line: slots done of total, events, the event rate and, while
// slots remain, the time left at the rate of slots so far.
func Line(label string, slots, total int, events int64, elapsed time.Duration) string {
	s := fmt.Sprintf("progress: %d/%d %s, %d events", slots, total, label, events)
	if elapsed > 0 {
		s += fmt.Sprintf(", %.1f events/s", float64(events)/elapsed.Seconds())
	}
	if slots >= total {
		s += ", done"
	} else if left, ok := timeLeft(slots, total, elapsed); ok {
		s += fmt.Sprintf(", about %s left", left)
	}
	return s
}
