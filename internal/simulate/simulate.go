// Package simulate runs dtfleet's fakes as standalone servers for trials and load tests: the
// fake Darktrace appliance (`dtfleet simulate`) and the fake Devo receiver (`dtfleet devo-sink`).
// It turns the commands' settings into the fakes' options, checking them, and serves until its
// context ends.
//
// It may import internal/config and the fakes (darktracetest, devotest); nothing but
// cmd/dtfleet imports it.
package simulate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// Appliance are the settings of the fake appliance (the flags of `dtfleet simulate`).
type Appliance struct {
	Listen        string
	TLS           bool
	PublicToken   string
	PrivateToken  string
	Days          int
	Seed          int64
	EventsPerHour []string // service=N
	EventSize     int
	Latency       time.Duration
	Jitter        time.Duration
	// LatencyPerInFlight and RateLimitAbove model an appliance that slows down and throttles
	// under load (darktracetest.Options).
	LatencyPerInFlight time.Duration
	RateLimitAbove     int
	FaultRate          float64
	FaultKinds         []string
	Faults             []string // scripted fault specs
	Span               time.Duration
	// Untidiness (see darktracetest.Untidiness); Realistic turns all of it on, and a field set
	// explicitly keeps its value.
	Realistic       bool
	LateBreaches    float64
	MaxBreachDelay  time.Duration
	IncidentDelay   time.Duration
	IncidentWindow  string // event or change
	ActionLifecycle bool
	ActionWindow    string // event or change
	ClockOffset     time.Duration
}

// ServeAppliance serves the fake appliance of opts (from Appliance.Options) on f.Listen until
// ctx ends. It prints the URL, the test tokens and a configuration snippet to out first.
func (f *Appliance) ServeAppliance(ctx context.Context, opts darktracetest.Options, logger *slog.Logger, out io.Writer) error {
	opts.Logger = logger
	ln, err := net.Listen("tcp", f.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", f.Listen, err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	scheme, caNote := "http", ""
	h := darktracetest.NewHandler(opts)
	srv := &http.Server{Handler: h.WithControl(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	if f.TLS {
		dir, err := os.MkdirTemp("", "dtfleet-simulate-")
		if err != nil {
			ln.Close()
			return fmt.Errorf("creating the certificate directory: %w", err)
		}
		defer os.RemoveAll(dir)
		cert, certPEM, err := darktracetest.SelfSignedCert(slices.Compact([]string{"localhost", "127.0.0.1", host})...)
		if err != nil {
			ln.Close()
			return err
		}
		caFile := filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
			ln.Close()
			return fmt.Errorf("writing the certificate: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
		caNote = fmt.Sprintf("    tls: {ca_file: %s}\n", caFile)
		fmt.Fprintf(out, "certificate (tls.ca_file): %s\n", caFile)
	}
	base := fmt.Sprintf("%s://%s", scheme, net.JoinHostPort(host, port))
	o := h.Options()
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
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	h.Close() // release stalled requests
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		srv.Close()
		return fmt.Errorf("stopping: %w", err)
	}
	logger.Info("simulated Darktrace appliance stopped", "requests", h.Requests(), "max_in_flight", h.MaxInFlight())
	return nil
}

// Options turns the settings into the fake's options; an error names the flag at fault.
func (f *Appliance) Options() (darktracetest.Options, error) {
	if f.Days < 0 {
		return darktracetest.Options{}, fmt.Errorf("--days must not be negative, got %d", f.Days)
	}
	if f.Span < 0 {
		return darktracetest.Options{}, fmt.Errorf("--span must not be negative, got %v", f.Span)
	}
	faults := darktracetest.Faults{Rate: f.FaultRate}
	for _, name := range f.FaultKinds {
		k, err := darktracetest.ParseFaultKind(strings.TrimSpace(name))
		if err != nil {
			return darktracetest.Options{}, fmt.Errorf("--fault-kinds: %w", err)
		}
		faults.Kinds = append(faults.Kinds, k)
	}
	for _, spec := range f.Faults {
		fault, err := darktracetest.ParseFault(spec)
		if err != nil {
			return darktracetest.Options{}, fmt.Errorf("--fault: %w", err)
		}
		faults.Script = append(faults.Script, fault)
	}
	if f.FaultRate < 0 || f.FaultRate > 1 {
		return darktracetest.Options{}, fmt.Errorf("--fault-rate must be in [0, 1], got %v", f.FaultRate)
	}
	if f.Latency < 0 || f.Jitter < 0 || f.EventSize < 0 || f.LatencyPerInFlight < 0 || f.RateLimitAbove < 0 {
		return darktracetest.Options{}, errors.New("--latency, --jitter, --event-size, --latency-per-inflight and --rate-limit-above must not be negative")
	}
	if f.PublicToken == "" || f.PrivateToken == "" {
		return darktracetest.Options{}, errors.New("--public-token and --private-token must not be empty")
	}
	rates := map[string]float64{}
	for _, kv := range f.EventsPerHour {
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
		LateBreachShare: f.LateBreaches, MaxBreachDelay: f.MaxBreachDelay, IncidentDelay: f.IncidentDelay,
		ActionLifecycle: f.ActionLifecycle, ClockOffset: f.ClockOffset,
	}
	var err error
	if untidy.IncidentWindow, err = darktracetest.ParseWindowField(f.IncidentWindow); err != nil {
		return darktracetest.Options{}, fmt.Errorf("--incident-window: %w", err)
	}
	if untidy.ActionWindow, err = darktracetest.ParseWindowField(f.ActionWindow); err != nil {
		return darktracetest.Options{}, fmt.Errorf("--action-window: %w", err)
	}
	if err := untidy.Validate(); err != nil {
		return darktracetest.Options{}, fmt.Errorf("--late-breaches, --max-breach-delay, --incident-delay: %w", err)
	}
	now := time.Now().UTC()
	span := time.Duration(f.Days) * 24 * time.Hour
	if f.Span > 0 {
		span = f.Span
	}
	return darktracetest.Options{
		PublicToken:        f.PublicToken,
		PrivateToken:       f.PrivateToken,
		Seed:               f.Seed,
		Start:              now.Add(-span).Truncate(time.Hour),
		End:                now.Add(10 * 365 * 24 * time.Hour), // data keeps appearing as time passes
		EventsPerHour:      rates,
		EventSize:          f.EventSize,
		Latency:            f.Latency,
		Jitter:             f.Jitter,
		LatencyPerInFlight: f.LatencyPerInFlight,
		RateLimitAbove:     f.RateLimitAbove,
		Faults:             faults,
		Untidy:             untidy,
		Realistic:          f.Realistic,
	}, nil
}
