// Package inspect holds the logic of the commands that look at a configuration and its
// appliances without running a fleet: the summary of what a configuration runs (validate), the
// token check (check) and one window fetched as a worker would fetch it (fetch).
//
// It may import internal/config and the worker's Darktrace client and event processing; it must
// not import the bus or the fleet.
package inspect

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/events"
)

// UsageError is an error in how a command was called (a flag's value), as opposed to a failure
// of what it did; commands exit 2 on it.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usage(err error) error { return &UsageError{Err: err} }

// CheckService returns a UsageError when service is not one of config.Services.
func CheckService(service string) error {
	if !slices.Contains(config.Services, service) {
		return usage(fmt.Errorf("--service must be one of %v, not %q", config.Services, service))
	}
	return nil
}

// FetchRequest is one window of one service to fetch (the flags of `dtfleet fetch`).
type FetchRequest struct {
	Input   string // "" for the only enabled input
	Service string
	From    string // RFC 3339; windowed services only
	To      string
	Timeout time.Duration
	// Process runs the events through the worker's processing and prints key, time and event.
	Process bool
}

// Fetch sends the request a worker would send for r and prints each event as one JSON line on
// stdout, with a summary line (or the classified failure) on stderr. Errors in r are UsageErrors.
func Fetch(ctx context.Context, cfg *config.Config, r FetchRequest, logger *slog.Logger, stdout, stderr io.Writer) error {
	if err := CheckService(r.Service); err != nil {
		return err
	}
	name, err := pickInput(cfg, r.Input)
	if err != nil {
		return usage(err)
	}
	in := cfg.Inputs[name]
	svc := in.Services[r.Service]
	if !svc.IsEnabled() {
		why := "enabled: false"
		if !svc.Listed {
			why = "not listed under services"
		}
		fmt.Fprintf(stderr, "note: %s is off in input %s (%s); fetching it anyway\n", r.Service, name, why)
	}
	req := darktrace.Request{Service: r.Service, Endpoint: svc.Endpoint, LookBack: svc.LookBack}
	snapshot := r.Service == config.ServiceStatus || r.Service == config.ServiceSummary
	if !snapshot {
		if req.Start, err = parseFlagTime("--from", r.From); err != nil {
			return usage(err)
		}
		if req.End, err = parseFlagTime("--to", r.To); err != nil {
			return usage(err)
		}
		if !req.End.After(req.Start) {
			return usage(fmt.Errorf("--to (%s) must be after --from (%s)", r.To, r.From))
		}
	}
	path, query, err := req.PathAndQuery()
	if err != nil {
		return usage(err)
	}
	dc := darktrace.ConfigFromInput(in)
	dc.Logger = logger.With("input", name)
	dc.Timeout = r.Timeout
	c, err := darktrace.New(dc)
	if err != nil {
		return fmt.Errorf("configuring input %s: %w", name, err)
	}
	defer c.Close()
	out := bufio.NewWriterSize(stdout, 64<<10)
	emit := func(raw []byte) error {
		out.Write(raw)
		return out.WriteByte('\n')
	}
	var processed []events.Event
	if r.Process {
		proc, err := events.NewProcessor(events.Options{Service: r.Service, Flatten: svc.FlattenStatus(),
			Obfuscation: svc.Obfuscation, Logger: logger})
		if err != nil {
			return err
		}
		poll := time.Now().UTC()
		emit = func(raw []byte) error {
			return proc.Process(raw, poll, func(ev events.Event) error {
				processed = append(processed, ev)
				return nil
			})
		}
	}
	st, err := c.Fetch(ctx, req, emit)
	if err == nil && r.Process {
		events.SortByTime(processed)
		for _, ev := range processed {
			line, merr := json.Marshal(struct {
				Key   string          `json:"key"`
				Time  int64           `json:"time"`
				Event json.RawMessage `json:"event"`
			}{ev.Key, ev.Time, ev.Data})
			if merr != nil {
				err = fmt.Errorf("encoding event %s: %w", ev.Key, merr)
				break
			}
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	if ferr := out.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("writing events: %w", ferr)
	}
	what := path
	if query != "" {
		what += "?" + query
	}
	if err != nil {
		class := ""
		var dtErr *darktrace.Error
		if errors.As(err, &dtErr) {
			switch dtErr.Class {
			case darktrace.Terminal:
				class = " (terminal: repeating the request will not help until the cause is fixed)"
			case darktrace.Retryable:
				class = " (retryable: the fleet retries it with backoff; fetch does not)"
			}
		}
		fmt.Fprintf(stderr, "fetch %s %s: failed after %d events%s: %v\n", name, what, st.Events, class, err)
		return fmt.Errorf("fetching %s from input %s failed", r.Service, name)
	}
	fmt.Fprintf(stderr, "fetch %s %s: %d events, %d bytes in %v", name, what, st.Events, st.Bytes, st.Duration.Round(time.Millisecond))
	if r.Process {
		fmt.Fprintf(stderr, ", %d after processing", len(processed))
	}
	fmt.Fprintln(stderr)
	return nil
}

// pickInput returns name when set (it must exist), or the only enabled input.
func pickInput(cfg *config.Config, name string) (string, error) {
	if name != "" {
		if _, ok := cfg.Inputs[name]; !ok {
			return "", fmt.Errorf("--input %s: no such input", name)
		}
		return name, nil
	}
	enabled := cfg.EnabledInputs()
	if len(enabled) != 1 {
		return "", fmt.Errorf("the configuration has %d enabled inputs; pass --input NAME", len(enabled))
	}
	return enabled[0], nil
}

// FindLane returns the enabled lane of input (or the only enabled input) and service.
func FindLane(cfg *config.Config, input, service string) (config.Lane, error) {
	if input == "" {
		ins := cfg.EnabledInputs()
		if len(ins) != 1 {
			return config.Lane{}, fmt.Errorf("--input is required: %d inputs are enabled (%v)", len(ins), ins)
		}
		input = ins[0]
	}
	for _, ln := range cfg.Lanes() {
		if ln.Input == input && ln.Service == service {
			return ln, nil
		}
	}
	return config.Lane{}, fmt.Errorf("no enabled service %q on input %q (services: %v)", service, input, config.Services)
}

// parseFlagTime parses a required RFC 3339 flag value.
func parseFlagTime(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, fmt.Errorf("%s is required for windowed services", flag)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time: %w", flag, v, err)
	}
	return t, nil
}

// CheckTokens sends one cheap signed request to the appliance of each input in names, of a
// service the input runs anyway (darktrace.CheckRequest: status, else summarystatistics, else the
// last minute of a windowed service; never a service that is off), and prints
// one line per input to out: "Tokens have been validated successfully." or the classified
// error. It returns the inputs that failed, sorted.
func CheckTokens(ctx context.Context, cfg *config.Config, names []string, timeout time.Duration, logger *slog.Logger, out io.Writer) []string {
	var failed []string
	for _, name := range names {
		in := cfg.Inputs[name]
		dc := darktrace.ConfigFromInput(in)
		dc.Logger = logger.With("input", name)
		dc.Timeout = timeout
		c, err := darktrace.New(dc)
		if err == nil {
			// A call of a service the input runs anyway, never one that is off.
			if req, ok := darktrace.CheckRequest(in, time.Now()); ok {
				err = c.CheckWith(ctx, req)
			} else {
				err = c.Check(ctx)
			}
			c.Close()
		}
		if err != nil {
			failed = append(failed, name)
			fmt.Fprintf(out, "input %s (%s): %v\n", name, in.Credentials.Instance, err)
			continue
		}
		fmt.Fprintf(out, "input %s (%s): Tokens have been validated successfully.\n", name, in.Credentials.Instance)
	}
	slices.Sort(failed)
	return failed
}
