package devo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// DefaultTimeout bounds each network step of a Send (connecting, each write, the wait for the
// server's EOF, an HTTP response) when Options.Timeout is zero. It is the Devo SDK's socket timeout.
const DefaultTimeout = 30 * time.Second

// ErrBadConfig is wrapped by NewOutput errors about the output's settings (as opposed to the
// files they name).
var ErrBadConfig = errors.New("bad output configuration")

// Output delivers batches to one destination.
type Output interface {
	// Name is the output's key in the config (e.g. "devo_1").
	Name() string
	// Send delivers b and returns nil only once delivery is confirmed as far as the transport
	// allows (TLS/TCP: the bytes were written, the write side half-closed and the server's EOF
	// received on the connection that carried them; HTTP: a 2xx after the body was sent; file:
	// written and fsynced; console: written). On error nothing may be assumed delivered; the caller
	// retries the same batch (duplicates possible, loss never). An empty batch is a no-op; a batch
	// whose tag fails ValidateTag is refused with an error wrapping ErrInvalidTag. Send is not
	// called concurrently on one Output. Send must not keep b or its messages after it returns:
	// the shipper reuses their memory for the next batch.
	Send(ctx context.Context, b *Batch) error
	// Close releases connections and files.
	Close() error
}

// Runner is implemented by every Output that NewOutput returns. Run logs the sender statistics
// line of Devo's collector every Options.StatsPeriod (and once more on exit if anything was sent
// since the last line) until ctx ends; with a zero StatsPeriod it logs nothing and just waits.
// It always returns nil once ctx is done.
type Runner interface {
	Run(ctx context.Context) error
}

// Options are the process-wide settings of an output.
type Options struct {
	// Logger receives the output's logs; nil discards them.
	Logger *slog.Logger
	// Hostname is the syslog HOSTNAME field when the output's config has none; default os.Hostname().
	Hostname string
	// Stdout is where console outputs write; default os.Stdout.
	Stdout io.Writer
	// StatsPeriod is how often Run logs sender statistics; zero disables them.
	StatsPeriod time.Duration
	// Now is the clock for statistics and certificate validity; default time.Now.
	Now func() time.Time
	// Timeout bounds each network step of a Send; default DefaultTimeout.
	Timeout time.Duration
	// Metrics, when set, counts what the output confirmed (shared by every output of a
	// process); nil counts nothing.
	Metrics *Metrics
}

// sender is what each output type implements; output adds naming, tag checks and statistics.
type sender interface {
	send(ctx context.Context, b *Batch) error
	close() error
}

// NewOutput builds the output named name from its config. It loads certificates and keys here and
// returns an error that names the bad file (wrong/expired client cert, cert/key mismatch, a chain
// that does not verify the cert, unreadable file); other config problems wrap ErrBadConfig.
// The returned Output also implements Runner. cfg.Enabled is not consulted: the caller builds only
// the outputs it means to use.
func NewOutput(name string, cfg config.Output, opts Options) (Output, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	logger := opts.Logger.With("output", name, "type", cfg.Type)
	var (
		s   sender
		err error
	)
	switch cfg.Type {
	case config.OutputDevoPlatform, config.OutputRelay, config.OutputHTTP:
		host := cfg.Config.Hostname
		if host == "" {
			host, err = defaultHostname(opts.Hostname)
			if err != nil {
				return nil, fmt.Errorf("building output %s: %w", name, err)
			}
		}
		switch cfg.Type {
		case config.OutputDevoPlatform:
			s, err = newTLSSender(cfg.Config, host, opts, logger)
		case config.OutputRelay:
			s, err = newRelaySender(cfg.Config, host, opts, logger)
		default:
			s, err = newHTTPSender(cfg.Config, host, opts, logger)
		}
	case config.OutputConsole:
		s = newConsoleSender(opts.Stdout, hostnameOr(cfg.Config.Hostname, opts.Hostname))
	case config.OutputFile:
		s, err = newFileSender(cfg.Config.Path, hostnameOr(cfg.Config.Hostname, opts.Hostname))
	default:
		err = fmt.Errorf("%w: unknown output type %q (want %s, %s, %s, %s or %s)", ErrBadConfig, cfg.Type,
			config.OutputDevoPlatform, config.OutputRelay, config.OutputHTTP, config.OutputConsole, config.OutputFile)
	}
	if err != nil {
		return nil, fmt.Errorf("building output %s: %w", name, err)
	}
	opts.Metrics.touch(name)
	return &output{name: name, s: s, now: opts.Now, period: opts.StatsPeriod, logger: logger, metrics: opts.Metrics}, nil
}

// defaultHostname returns configured, or the machine's host name.
func defaultHostname(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("finding the host name (set the output's hostname): %w", err)
	}
	return h, nil
}

// hostnameOr is defaultHostname for local outputs, which fall back to "localhost".
func hostnameOr(configured, fallback string) string {
	if configured != "" {
		return configured
	}
	h, err := defaultHostname(fallback)
	if err != nil {
		return "localhost"
	}
	return h
}

// output wraps a sender with its name, tag validation and sender statistics.
type output struct {
	name    string
	s       sender
	now     func() time.Time
	period  time.Duration
	logger  *slog.Logger
	metrics *Metrics

	failing bool // the last Send failed: the next one is a reconnect (Send is never concurrent)

	mu     sync.Mutex
	total  int64         // messages delivered since the output was built
	recent int64         // messages delivered since the last statistics line
	busy   time.Duration // time spent in successful Sends since the last statistics line
	since  time.Time     // time of the last statistics line (zero: not yet started)
}

func (o *output) Name() string { return o.name }

func (o *output) Send(ctx context.Context, b *Batch) error {
	if b == nil || len(b.Events) == 0 {
		return nil
	}
	if err := ValidateTag(b.Tag); err != nil {
		return fmt.Errorf("sending to output %s: %w", o.name, err)
	}
	if o.failing {
		o.metrics.reconnect(o.name)
	}
	start := o.now()
	if err := o.s.send(ctx, b); err != nil {
		// A Send cut short by the caller's stop is no sign of trouble with Devo.
		o.failing = ctx.Err() == nil
		return fmt.Errorf("sending %d events of %s to output %s: %w", len(b.Events), b.Tag, o.name, err)
	}
	o.failing = false
	elapsed := o.now().Sub(start)
	o.metrics.confirmed(o.name, b, elapsed)
	o.mu.Lock()
	o.total += int64(len(b.Events))
	o.recent += int64(len(b.Events))
	o.busy += elapsed
	o.mu.Unlock()
	return nil
}

func (o *output) Close() error {
	if err := o.s.close(); err != nil {
		return fmt.Errorf("closing output %s: %w", o.name, err)
	}
	return nil
}

// Run logs sender statistics every period until ctx ends; see Runner.
func (o *output) Run(ctx context.Context) error {
	if o.period <= 0 {
		<-ctx.Done()
		return nil
	}
	o.mu.Lock()
	o.since = o.now()
	o.mu.Unlock()
	t := time.NewTicker(o.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.logStats(false)
			return nil
		case <-t.C:
			o.logStats(true)
		}
	}
}

// statsTimeLayout prints the "since" time as Python prints an aware UTC datetime, as Devo's
// collector does: 2023-01-10 16:09:16.116750+00:00.
const statsTimeLayout = "2006-01-02 15:04:05.000000-07:00"

// logStats logs one statistics line and starts a new period; unless always, it logs only when
// something was sent in the period.
func (o *output) logStats(always bool) {
	o.mu.Lock()
	total, recent, busy, since := o.total, o.recent, o.busy, o.since
	o.recent, o.busy, o.since = 0, 0, o.now()
	o.mu.Unlock()
	if !always && recent == 0 {
		return
	}
	// Devo's collector logs its sender pool before the totals. An output here is one sender
	// that the shipper calls synchronously, batch after batch: there is no queue in front of it.
	o.logger.Info("Number of available senders: 1")
	o.logger.Info("sender manager internal queue size: 0")
	o.logger.Info(fmt.Sprintf("Standard - Total number of messages sent: %d, messages sent since %q: %d (elapsed %.3f seconds)",
		total, since.UTC().Format(statsTimeLayout), recent, busy.Seconds()))
}
