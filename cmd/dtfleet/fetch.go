package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/events"
)

// fetchFlags are the fetch command's flags.
type fetchFlags struct {
	input   string
	service string
	from    string
	to      string
	timeout time.Duration
	process bool
}

func newFetchCmd(g *globalFlags) *cobra.Command {
	var cf *configFlags
	f := &fetchFlags{}
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Fetch one window of one service from the appliance and print its raw events",
		Long: `fetch sends the request a worker would send for one slot [--from, --to) of --service (RFC 3339
times; ignored for the snapshot services status and summarystatistics), with the service's
endpoint and look-back from the configuration, and prints each event of the response as one compact
JSON line on stdout, unprocessed (no flattening, no de-duplication), in response order. A summary
line goes to stderr. There is no retry: a failure prints its classified error and exits 1, and
the events printed before it are incomplete.

With --process the events go through the worker's processing instead: status is flattened (when
the service's flatten is on), obfuscation is applied, the events are sorted by event time and
each line is {"key": <dedupe key>, "time": <epoch ms>, "event": <event>}; they print once the
whole response has been read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if !slices.Contains(config.Services, f.service) {
				return &exitError{code: 2, err: fmt.Errorf("--service must be one of %v, not %q", config.Services, f.service)}
			}
			cfg, err := cf.load()
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			name, err := pickInput(cfg, f.input)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			in := cfg.Inputs[name]
			svc := in.Services[f.service]
			if !svc.IsEnabled() {
				why := "enabled: false"
				if !svc.Listed {
					why = "not listed under services"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "note: %s is off in input %s (%s); fetching it anyway\n", f.service, name, why)
			}
			req := darktrace.Request{Service: f.service, Endpoint: svc.Endpoint, LookBack: svc.LookBack}
			snapshot := f.service == config.ServiceStatus || f.service == config.ServiceSummary
			if !snapshot {
				if req.Start, err = parseFlagTime("--from", f.from); err != nil {
					return &exitError{code: 2, err: err}
				}
				if req.End, err = parseFlagTime("--to", f.to); err != nil {
					return &exitError{code: 2, err: err}
				}
				if !req.End.After(req.Start) {
					return &exitError{code: 2, err: fmt.Errorf("--to (%s) must be after --from (%s)", f.to, f.from)}
				}
			}
			path, query, err := req.PathAndQuery()
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			dc := darktrace.ConfigFromInput(in)
			dc.Logger = logger.With("input", name)
			dc.Timeout = f.timeout
			c, err := darktrace.New(dc)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("configuring input %s: %w", name, err)}
			}
			defer c.Close()
			out := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
			emit := func(raw []byte) error {
				out.Write(raw)
				return out.WriteByte('\n')
			}
			var processed []events.Event
			if f.process {
				proc, err := events.NewProcessor(events.Options{Service: f.service, Flatten: svc.FlattenStatus(),
					Obfuscation: svc.Obfuscation, Logger: logger})
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				poll := time.Now().UTC()
				emit = func(raw []byte) error {
					return proc.Process(raw, poll, func(ev events.Event) error {
						processed = append(processed, ev)
						return nil
					})
				}
			}
			st, err := c.Fetch(cmd.Context(), req, emit)
			if err == nil && f.process {
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
				fmt.Fprintf(cmd.ErrOrStderr(), "fetch %s %s: failed after %d events%s: %v\n", name, what, st.Events, class, err)
				return &exitError{code: 1, err: fmt.Errorf("fetching %s from input %s failed", f.service, name)}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "fetch %s %s: %d events, %d bytes in %v", name, what, st.Events, st.Bytes, st.Duration.Round(time.Millisecond))
			if f.process {
				fmt.Fprintf(cmd.ErrOrStderr(), ", %d after processing", len(processed))
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			return nil
		},
	}
	cf = addConfigFlags(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.input, "input", "", "input to fetch from (default: the only enabled input)")
	fl.StringVar(&f.service, "service", "", "service: "+fmt.Sprint(config.Services))
	fl.StringVar(&f.from, "from", "", "window start, RFC 3339 (windowed services)")
	fl.StringVar(&f.to, "to", "", "window end, RFC 3339, exclusive (windowed services)")
	fl.BoolVar(&f.process, "process", false, "flatten, obfuscate and sort as a worker does, and print key, time and event")
	fl.DurationVar(&f.timeout, "timeout", darktrace.DefaultTimeout, "give up when the appliance sends nothing (no headers, or no body bytes) for this long")
	_ = cmd.MarkFlagRequired("service")
	return cmd
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
