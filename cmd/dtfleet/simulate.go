package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// simulateFlags are the simulate command's flags.
type simulateFlags struct {
	listen        string
	useTLS        bool
	publicToken   string
	privateToken  string
	days          int
	seed          int64
	eventsPerHour []string
	eventSize     int
	latency       time.Duration
	jitter        time.Duration
	faultRate     float64
	faultKinds    []string
	faults        []string
	span          time.Duration
	// Untidiness (see darktracetest.Untidiness).
	realistic       bool
	lateBreaches    float64
	maxBreachDelay  time.Duration
	incidentDelay   time.Duration
	incidentWindow  string
	actionLifecycle bool
	actionWindow    string
	clockOffset     time.Duration
}

func newSimulateCmd(g *globalFlags) *cobra.Command {
	f := &simulateFlags{}
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Run a fake Darktrace appliance with generated data, for trials and load tests",
		Long: `simulate serves the Darktrace API (/modelbreaches, /aianalyst/incidentevents, /antigena, /status,
/summarystatistics) from a deterministic generated dataset that starts --days ago and keeps
growing in real time, verifying every request's signature and date like the appliance. It prints
the URL, the (test) tokens and a configuration snippet to paste, then serves until interrupted.
With --tls it serves HTTPS with a new self-signed certificate, written to a temporary directory
whose path it prints (for tls.ca_file).

Faults: --fault-rate injects random faults, drawn from --fault-kinds (default: the retryable ones,
status, rate_limit, stall, reset, truncate). --fault SPEC scripts one fault (repeatable), consumed
by the first matching request: a kind (status, rate_limit, stall, reset, truncate, login_page,
redirect_403, forbidden, input_error, signature_error, date_error, login_redirect, maintenance) then
comma-separated settings: endpoint=/path or service=NAME, start=T,end=T (the request's window must
cover [start, end]; RFC 3339 or epoch ms), times=N (-1: every matching request), for=DUR (every
matching request for that long on the appliance clock from the first), status=CODE, retry_after=DUR,
retry_after_date=true, stall=DUR, after_events=N. For example:
  --fault 'rate_limit,retry_after=3s,times=2'
  --fault 'input_error,service=modelbreaches,start=2024-05-01T10:00:00Z,end=2024-05-01T11:00:00Z,times=-1'

Untidiness (off by default; --realistic turns all of it on for live runs: 10% of breaches up to
3h late, AI Analyst events visible up to 5m after createdAt, Antigena actions that are extended,
cleared and expire, the appliance clock 90s ahead; a flag set explicitly overrides its part):
--late-breaches SHARE (created up to --max-breach-delay after their time, invisible until then),
--incident-delay DUR, --incident-window event|change (what the AI Analyst window filters on:
createdAt, or when the event became visible), --action-lifecycle, --action-window event|change
(start, or the current updated), --clock-offset DUR (the appliance clock, its Date header and its
±30 minute DTAPI-Date check). Transient faults for a time span: --fault 'date_error,for=10m',
'signature_error,for=5m' (token rotation), 'login_redirect,for=2m', 'maintenance,status=503,for=15m'.

Control API (no authentication, same address): GET /_dtfleet/truth/due?service=S&start=T&end=T&at=T
(what a complete collector must have delivered by appliance time at: every breach and AI Analyst
event visible by then, every Antigena action state reached by then, keyed codeid:state), GET /_dtfleet/truth/keys?service=S&start=T&end=T (the key
of every event with event time in [start, end); start defaults to the data's start, end to now),
GET /_dtfleet/truth/events?service=S&start=T&end=T (those events, as JSON lines), GET /_dtfleet/truth/response?service=S&start=T&end=T (what a
dtfleet request for that window returns now), POST /_dtfleet/faults (one --fault SPEC per line),
DELETE /_dtfleet/faults, GET /_dtfleet/stats.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			opts, err := f.options()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			opts.Logger = logger
			ln, err := net.Listen("tcp", f.listen)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("listening on %s: %w", f.listen, err)}
			}
			host, port, _ := net.SplitHostPort(ln.Addr().String())
			if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
				host = "127.0.0.1"
			}
			scheme, caNote := "http", ""
			h := darktracetest.NewHandler(opts)
			srv := &http.Server{Handler: h.WithControl(), ReadHeaderTimeout: 10 * time.Second,
				ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
			if f.useTLS {
				dir, err := os.MkdirTemp("", "dtfleet-simulate-")
				if err != nil {
					ln.Close()
					return &exitError{code: 1, err: fmt.Errorf("creating the certificate directory: %w", err)}
				}
				defer os.RemoveAll(dir)
				cert, certPEM, err := darktracetest.SelfSignedCert(slices.Compact([]string{"localhost", "127.0.0.1", host})...)
				if err != nil {
					ln.Close()
					return &exitError{code: 1, err: err}
				}
				caFile := filepath.Join(dir, "ca.pem")
				if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
					ln.Close()
					return &exitError{code: 1, err: fmt.Errorf("writing the certificate: %w", err)}
				}
				ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
				scheme = "https"
				caNote = fmt.Sprintf("    tls: {ca_file: %s}\n", caFile)
				fmt.Fprintf(cmd.OutOrStdout(), "certificate (tls.ca_file): %s\n", caFile)
			}
			base := fmt.Sprintf("%s://%s", scheme, net.JoinHostPort(host, port))
			o := h.Options()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "url: %s\npublic token: %s\nprivate token: %s\ndata: from %s, seed %d\n",
				base, o.PublicToken, o.PrivateToken, o.Start.Format(time.RFC3339), o.Seed)
			fmt.Fprintf(out, "ground truth: %s%struth/keys?service=modelbreaches, %s%struth/events?service=modelbreaches&start=%s&end=%s\n",
				base, darktracetest.ControlPrefix, base, darktracetest.ControlPrefix, o.Start.Format(time.RFC3339), o.Start.Add(time.Hour).Format(time.RFC3339))
			if u := o.Untidy; u != (darktracetest.Untidiness{MaxBreachDelay: u.MaxBreachDelay}) {
				fmt.Fprintf(out, "untidiness: late breaches %g (up to %v), AI Analyst delay %v (window on %s), Antigena lifecycle %v (window on %s), clock offset %v\n",
					u.LateBreachShare, u.MaxBreachDelay, u.IncidentDelay, u.IncidentWindow, u.ActionLifecycle, u.ActionWindow, u.ClockOffset)
			}
			if n := len(o.Faults.Script); n > 0 || o.Faults.Rate > 0 {
				fmt.Fprintf(out, "faults: %d scripted, random rate %g\n", n, o.Faults.Rate)
			}
			fmt.Fprintf(out, "\nconfiguration snippet:\ninputs:\n  darktrace:\n    credentials: {public_token: %s, private_token: %s, instance: %s}\n%s    services:\n",
				o.PublicToken, o.PrivateToken, base, caNote)
			for _, svc := range []string{config.ServiceModelBreaches, config.ServiceIncidentEvents, config.ServiceAntigena} {
				fmt.Fprintf(out, "      %s: {start_time_in_utc_format: %q}\n", svc, o.Start.Format(time.RFC3339))
			}
			fmt.Fprintf(out, "      status: {}\n      summarystatistics: {}\n")

			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			logger.Info("simulated Darktrace appliance serving", "url", base)
			select {
			case err := <-errc:
				h.Close()
				return &exitError{code: 1, err: fmt.Errorf("serving: %w", err)}
			case <-cmd.Context().Done():
			}
			h.Close() // release stalled requests
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = srv.Shutdown(ctx)
			if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
				err = serr
			}
			if err != nil {
				srv.Close()
				return &exitError{code: 1, err: fmt.Errorf("stopping: %w", err)}
			}
			logger.Info("simulated Darktrace appliance stopped", "requests", h.Requests(), "max_in_flight", h.MaxInFlight())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:0", "listen address (port 0 picks a free port)")
	fl.BoolVar(&f.useTLS, "tls", false, "serve HTTPS with a new self-signed certificate")
	fl.StringVar(&f.publicToken, "public-token", darktracetest.DefaultPublicToken, "public token the fake accepts")
	fl.StringVar(&f.privateToken, "private-token", darktracetest.DefaultPrivateToken, "private token the fake accepts (a test token)")
	fl.IntVar(&f.days, "days", 7, "days of history before now")
	fl.Int64Var(&f.seed, "seed", 1, "dataset seed (same seed, same data)")
	fl.StringArrayVar(&f.eventsPerHour, "events-per-hour", nil, "service=N mean events per hour, repeatable (modelbreaches, aianalyst_incidentevents, antigena)")
	fl.IntVar(&f.eventSize, "event-size", 0, "approximate bytes per model breach (0: the sample's size, about 6 KB)")
	fl.DurationVar(&f.latency, "latency", 0, "added response latency")
	fl.DurationVar(&f.jitter, "jitter", 0, "latency jitter (uniform ±)")
	fl.Float64Var(&f.faultRate, "fault-rate", 0, "probability in [0, 1] that a request gets a random fault")
	fl.StringSliceVar(&f.faultKinds, "fault-kinds", nil, "kinds random faults are drawn from (default status,rate_limit,stall,reset,truncate)")
	fl.StringArrayVar(&f.faults, "fault", nil, "scripted fault SPEC, repeatable (see above)")
	fl.DurationVar(&f.span, "span", 0, "history before now as a duration, e.g. 36h (overrides --days)")
	fl.BoolVar(&f.realistic, "realistic", false, "turn on all the untidiness below at realistic values (explicit flags override)")
	fl.Float64Var(&f.lateBreaches, "late-breaches", 0, "share in [0, 1] of breaches created up to --max-breach-delay after their time")
	fl.DurationVar(&f.maxBreachDelay, "max-breach-delay", 3*time.Hour, "how late a late breach may be created")
	fl.DurationVar(&f.incidentDelay, "incident-delay", 0, "AI Analyst events become visible up to this long after createdAt")
	fl.StringVar(&f.incidentWindow, "incident-window", "event", "what the AI Analyst window filters on: event (createdAt) or change (visibility)")
	fl.BoolVar(&f.actionLifecycle, "action-lifecycle", false, "Antigena actions are extended, cleared and expire over time, each change with its updated time")
	fl.StringVar(&f.actionWindow, "action-window", "event", "what the Antigena window filters on: event (start) or change (updated)")
	fl.DurationVar(&f.clockOffset, "clock-offset", 0, "the appliance clock's offset from this host's (e.g. 2m ahead, -40m behind)")
	return cmd
}

// options turns the flags into the fake's options.
func (f *simulateFlags) options() (darktracetest.Options, error) {
	if f.days < 0 {
		return darktracetest.Options{}, fmt.Errorf("--days must not be negative, got %d", f.days)
	}
	if f.span < 0 {
		return darktracetest.Options{}, fmt.Errorf("--span must not be negative, got %v", f.span)
	}
	faults := darktracetest.Faults{Rate: f.faultRate}
	for _, name := range f.faultKinds {
		k, err := darktracetest.ParseFaultKind(strings.TrimSpace(name))
		if err != nil {
			return darktracetest.Options{}, fmt.Errorf("--fault-kinds: %w", err)
		}
		faults.Kinds = append(faults.Kinds, k)
	}
	for _, spec := range f.faults {
		fault, err := darktracetest.ParseFault(spec)
		if err != nil {
			return darktracetest.Options{}, fmt.Errorf("--fault: %w", err)
		}
		faults.Script = append(faults.Script, fault)
	}
	if f.faultRate < 0 || f.faultRate > 1 {
		return darktracetest.Options{}, fmt.Errorf("--fault-rate must be in [0, 1], got %v", f.faultRate)
	}
	if f.latency < 0 || f.jitter < 0 || f.eventSize < 0 {
		return darktracetest.Options{}, errors.New("--latency, --jitter and --event-size must not be negative")
	}
	if f.publicToken == "" || f.privateToken == "" {
		return darktracetest.Options{}, errors.New("--public-token and --private-token must not be empty")
	}
	rates := map[string]float64{}
	for _, kv := range f.eventsPerHour {
		svc, v, ok := strings.Cut(kv, "=")
		if !ok {
			return darktracetest.Options{}, fmt.Errorf("--events-per-hour %q: want service=N", kv)
		}
		if _, windowed := darktracetest.DefaultEventsPerHour[svc]; !windowed {
			return darktracetest.Options{}, fmt.Errorf("--events-per-hour %q: service must be modelbreaches, aianalyst_incidentevents or antigena", kv)
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < 0 {
			return darktracetest.Options{}, fmt.Errorf("--events-per-hour %q: want a non-negative number", kv)
		}
		rates[svc] = n
	}
	untidy := darktracetest.Untidiness{
		LateBreachShare: f.lateBreaches, MaxBreachDelay: f.maxBreachDelay, IncidentDelay: f.incidentDelay,
		ActionLifecycle: f.actionLifecycle, ClockOffset: f.clockOffset,
	}
	var err error
	if untidy.IncidentWindow, err = darktracetest.ParseWindowField(f.incidentWindow); err != nil {
		return darktracetest.Options{}, fmt.Errorf("--incident-window: %w", err)
	}
	if untidy.ActionWindow, err = darktracetest.ParseWindowField(f.actionWindow); err != nil {
		return darktracetest.Options{}, fmt.Errorf("--action-window: %w", err)
	}
	if err := untidy.Validate(); err != nil {
		return darktracetest.Options{}, fmt.Errorf("--late-breaches, --max-breach-delay, --incident-delay: %w", err)
	}
	now := time.Now().UTC()
	span := time.Duration(f.days) * 24 * time.Hour
	if f.span > 0 {
		span = f.span
	}
	return darktracetest.Options{
		PublicToken:   f.publicToken,
		PrivateToken:  f.privateToken,
		Seed:          f.seed,
		Start:         now.Add(-span).Truncate(time.Hour),
		End:           now.Add(10 * 365 * 24 * time.Hour), // data keeps appearing as time passes
		EventsPerHour: rates,
		EventSize:     f.eventSize,
		Latency:       f.latency,
		Jitter:        f.jitter,
		Faults:        faults,
		Untidy:        untidy,
		Realistic:     f.realistic,
	}, nil
}
