package darktracetest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// ControlPrefix is the path prefix of the control API that ControlHandler serves. No Darktrace
// endpoint starts with it.
const ControlPrefix = "/_dtfleet/"

// ParseFaultKind returns the kind named name (the names FaultKind.String prints: status,
// rate_limit, stall, reset, truncate, login_page, redirect_403, forbidden, input_error,
// signature_error, date_error, login_redirect, maintenance).
func ParseFaultKind(name string) (FaultKind, error) {
	for k, s := range faultNames {
		if s == name {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown fault kind %q; expected one of %s", name, strings.Join(faultKindNames(), ", "))
}

// faultKindNames lists the fault kind names, sorted.
func faultKindNames() []string {
	names := make([]string, 0, len(faultNames))
	for _, s := range faultNames {
		names = append(names, s)
	}
	slices.Sort(names)
	return names
}

// ParseFault parses a scripted fault written as a kind followed by comma-separated key=value
// settings, for example
//
//	status,status=502,times=3
//	rate_limit,retry_after=5s
//	truncate,endpoint=/modelbreaches,after_events=2
//	input_error,service=modelbreaches,start=2024-05-01T10:00:00Z,end=2024-05-01T11:00:00Z,times=-1
//	date_error,for=10m
//	maintenance,status=502,for=30m,retry_after=60s
//
// Keys: endpoint (a path such as /modelbreaches) or service (a service name); start and end
// (RFC 3339 or epoch milliseconds: the fault hits requests whose window covers [start, end]);
// times (how many requests it hits, default 1, -1 for every matching request); for (a duration:
// every matching request fails for that long on the appliance's clock from the first one, then
// the fault is dropped; times is then ignored); status (the status code of kinds status and
// maintenance, default 503); retry_after (a duration, sent as Retry-After by status and
// rate_limit); retry_after_date (true sends Retry-After as an HTTP date); stall (how long kind
// stall hangs, default until the client gives up); after_events (complete events sent before a
// reset, truncate or mid-body stall).
func ParseFault(spec string) (Fault, error) {
	parts := strings.Split(strings.TrimSpace(spec), ",")
	kind, err := ParseFaultKind(strings.TrimSpace(parts[0]))
	if err != nil {
		return Fault{}, fmt.Errorf("fault %q: %w", spec, err)
	}
	f := Fault{Kind: kind}
	for _, kv := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return Fault{}, fmt.Errorf("fault %q: %q is not key=value", spec, kv)
		}
		var err error
		switch k {
		case "endpoint":
			if !strings.HasPrefix(v, "/") {
				err = fmt.Errorf("endpoint %q must be a path such as /modelbreaches", v)
			}
			f.Endpoint = v
		case "service":
			if !slices.Contains(config.Services, v) {
				err = fmt.Errorf("service %q is not one of %s", v, strings.Join(config.Services, ", "))
			}
			f.Endpoint = endpointOf(v)
		case "start":
			f.Start, err = parseControlTime(v)
		case "end":
			f.End, err = parseControlTime(v)
		case "times":
			f.Times, err = strconv.Atoi(v)
			if err == nil && f.Times == 1 {
				f.Times = 0 // once
			}
		case "status":
			f.Status, err = strconv.Atoi(v)
			if err == nil && (f.Status < 100 || f.Status > 599) {
				err = fmt.Errorf("status %d is not an HTTP status code", f.Status)
			}
		case "for":
			f.For, err = time.ParseDuration(v)
		case "retry_after":
			f.RetryAfter, err = time.ParseDuration(v)
		case "retry_after_date":
			f.RetryAfterDate, err = strconv.ParseBool(v)
		case "stall":
			f.Stall, err = time.ParseDuration(v)
		case "after_events":
			f.AfterEvents, err = strconv.Atoi(v)
			if err == nil && f.AfterEvents < 0 {
				err = fmt.Errorf("after_events %d is negative", f.AfterEvents)
			}
		default:
			err = fmt.Errorf("unknown key %q; expected endpoint, service, start, end, times, for, status, retry_after, retry_after_date, stall or after_events", k)
		}
		if err != nil {
			return Fault{}, fmt.Errorf("fault %q: %w", spec, err)
		}
	}
	if f.RetryAfter < 0 || f.Stall < 0 || f.For < 0 {
		return Fault{}, fmt.Errorf("fault %q: durations must not be negative", spec)
	}
	return f, nil
}

// parseControlTime parses an RFC 3339 time or epoch milliseconds.
func parseControlTime(v string) (time.Time, error) {
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor epoch milliseconds", v)
	}
	return t.UTC(), nil
}

// ControlHandler serves the fake's control API under ControlPrefix, without authentication (it
// is a test tool on a loopback address):
//
//	GET    /_dtfleet/truth/keys?service=S&start=T&end=T       the sorted keys of every event of S with event time in [start, end) (JSON)
//	GET    /_dtfleet/truth/events?service=S&start=T&end=T     every event of S with event time in [start, end), sorted, as JSON lines
//	GET    /_dtfleet/truth/response?service=S&start=T&end=T   the events a dtfleet request for that window returns now, as JSON lines
//	GET    /_dtfleet/truth/due?service=S&start=T&end=T&at=T   what a complete collector must have delivered by appliance time at (default: the appliance's now), as Due (JSON)
//	GET    /_dtfleet/faults                                   {"pending": N}
//	POST   /_dtfleet/faults                                   one ParseFault spec per body line, appended to the script
//	DELETE /_dtfleet/faults                                   drops the pending scripted faults
//	GET    /_dtfleet/stats                                    request counters, the appliance's clock and the untidiness knobs (JSON)
//
// Times are RFC 3339 or epoch milliseconds; start defaults to the data's start and end to the
// earlier of the data's end and now (events after now do not exist yet on a real appliance).
func (h *Handler) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+ControlPrefix+"truth/keys", func(w http.ResponseWriter, r *http.Request) {
		service, start, end, ok := h.controlRange(w, r)
		if !ok {
			return
		}
		keys := h.KeysIn(service, start, end)
		if keys == nil {
			keys = []string{}
		}
		writeControlJSON(w, map[string]any{"service": service, "start": start.Format(time.RFC3339Nano),
			"end": end.Format(time.RFC3339Nano), "count": len(keys), "keys": keys})
	})
	events := func(all bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			service, start, end, ok := h.controlRange(w, r)
			if !ok {
				return
			}
			var evs [][]byte
			if all {
				evs = h.AllEvents(service, start, end)
			} else {
				evs = h.Events(service, start, end)
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			bw := bufio.NewWriter(w)
			for _, ev := range evs {
				bw.Write(ev)
				bw.WriteByte('\n')
			}
			_ = bw.Flush()
		}
	}
	mux.HandleFunc("GET "+ControlPrefix+"truth/events", events(true))
	mux.HandleFunc("GET "+ControlPrefix+"truth/response", events(false))
	mux.HandleFunc("GET "+ControlPrefix+"truth/due", func(w http.ResponseWriter, r *http.Request) {
		service, start, end, ok := h.controlRange(w, r)
		if !ok {
			return
		}
		at := h.now().UTC()
		if v := r.URL.Query().Get("at"); v != "" {
			t, err := parseControlTime(v)
			if err != nil {
				http.Error(w, "at: "+err.Error(), http.StatusBadRequest)
				return
			}
			at = t
		}
		due := h.Due(service, start, end, at)
		if due == nil {
			due = []TruthEvent{}
		}
		writeControlJSON(w, map[string]any{"service": service, "start": start.Format(time.RFC3339Nano),
			"end": end.Format(time.RFC3339Nano), "at": at.Format(time.RFC3339Nano), "count": len(due), "events": due})
	})
	mux.HandleFunc("GET "+ControlPrefix+"faults", func(w http.ResponseWriter, r *http.Request) {
		writeControlJSON(w, map[string]any{"pending": h.PendingFaults()})
	})
	mux.HandleFunc("POST "+ControlPrefix+"faults", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var faults []Fault
		for line := range strings.SplitSeq(string(body), "\n") {
			if strings.TrimSpace(line) == "" {
				continue
			}
			f, err := ParseFault(line)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			faults = append(faults, f)
		}
		for _, f := range faults {
			h.AddFault(f)
		}
		writeControlJSON(w, map[string]any{"added": len(faults), "pending": h.PendingFaults()})
	})
	mux.HandleFunc("DELETE "+ControlPrefix+"faults", func(w http.ResponseWriter, r *http.Request) {
		h.ClearFaults()
		writeControlJSON(w, map[string]any{"pending": h.PendingFaults()})
	})
	mux.HandleFunc("GET "+ControlPrefix+"stats", func(w http.ResponseWriter, r *http.Request) {
		per := map[string]int64{}
		for path := range endpoints {
			per[path] = h.EndpointRequests(path)
		}
		writeControlJSON(w, map[string]any{"requests": h.Requests(), "max_in_flight": h.MaxInFlight(), "endpoints": per,
			"data_start": h.opts.Start.Format(time.RFC3339), "data_end": h.opts.End.Format(time.RFC3339),
			"appliance_now": h.now().UTC().Format(time.RFC3339Nano), "untidy": h.untidySummary()})
	})
	return mux
}

// controlRange reads the service, start and end query parameters, answering 400 when one is bad.
// start defaults to the data's start, end to the earlier of the data's end and now.
func (h *Handler) controlRange(w http.ResponseWriter, r *http.Request) (service string, start, end time.Time, ok bool) {
	service, ok = controlService(w, r)
	if !ok {
		return "", start, end, false
	}
	start, end = h.opts.Start, h.opts.End
	if now := h.now().UTC(); now.Before(end) {
		end = now
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"start", &start}, {"end", &end}} {
		if v := r.URL.Query().Get(p.name); v != "" {
			t, err := parseControlTime(v)
			if err != nil {
				http.Error(w, p.name+": "+err.Error(), http.StatusBadRequest)
				return "", start, end, false
			}
			*p.dst = t
		}
	}
	return service, start, end, true
}

// controlService reads and checks the service query parameter, answering 400 when it is bad.
func controlService(w http.ResponseWriter, r *http.Request) (string, bool) {
	s := r.URL.Query().Get("service")
	if !slices.Contains(config.Services, s) {
		http.Error(w, fmt.Sprintf("service=%q: expected one of %s", s, strings.Join(config.Services, ", ")), http.StatusBadRequest)
		return "", false
	}
	return s, true
}

// writeControlJSON answers 200 with v as JSON.
func writeControlJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// WithControl returns a handler serving the control API under ControlPrefix and the fake
// appliance everywhere else.
func (h *Handler) WithControl() http.Handler {
	control := h.ControlHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, ControlPrefix) {
			control.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
