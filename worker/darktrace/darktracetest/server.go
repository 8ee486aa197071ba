// Package darktracetest is a fake Darktrace appliance for tests and load runs, in the manner of
// net/http/httptest: NewServer and NewTLSServer start a real server on loopback, and Handler
// serves the same API anywhere (dtfleet simulate uses it).
//
// The fake verifies every request as the appliance does (DTAPI-Token, DTAPI-Date within ±30
// minutes, DTAPI-Signature over the raw path and query as received), and serves /modelbreaches,
// /aianalyst/incidentevents, /antigena, /status and /summarystatistics from a deterministic
// dataset shaped like the real samples: the same Options give the same events. Data is generated
// lazily per service and hour from the seed, so a fake with a year of data starts at once and a
// huge response streams without being held in memory.
//
// It reproduces the traps the reference documents: breaches created after their time and
// invisible until then, acknowledged breaches and events hidden without includeacknowledged,
// unsorted AI Analyst events, pinned events returned outside the window unless
// includeallpinned=false, groupScore as number, string or null, /antigena as an array or an
// object, /status with an errored probe without id and Unified View instances. Faults can be
// injected at random or by script. Ground truth (Events, AllEvents, Keys) lets tests check that
// nothing was lost or repeated.
//
// # Untidiness
//
// By default the fake is tidy, as the fleet tests expect: breaches are at most an hour late,
// AI Analyst events are visible at createdAt, Antigena actions never change and the clock is
// Options.Now. Options.Untidy (Go) or the simulate flags turn on the real world's mess, each part
// on its own; Options.Realistic (--realistic) turns all of it on at RealisticUntidiness's values
// for live runs. Turning a knob on changes no id, time or score of the dataset.
//
//   - LateBreachShare, MaxBreachDelay (--late-breaches SHARE, --max-breach-delay DUR): that share
//     of breaches is created up to MaxBreachDelay (default 3h) after its time, and is invisible
//     until the appliance clock reaches its creationTime. /modelbreaches windows filter on time,
//     or on creationTime with creationtime=true.
//   - IncidentDelay (--incident-delay DUR): each AI Analyst event becomes visible a delay in
//     (0, IncidentDelay] after its createdAt.
//   - IncidentWindow (--incident-window event|change): what the AI Analyst window filters on,
//     UNVERIFIED in the reference: createdAt (event, the default and the harsher reading: a
//     window fetched right after its end misses the events not visible yet, until it is fetched
//     again) or the instant the event became visible (change).
//   - ActionLifecycle (--action-lifecycle): Antigena actions are created (active) at start, 30%
//     are extended once (a later expires), 20% are cleared, the others expire; each state sets
//     "updated" (a string of epoch ms) and adds a history entry, and a response shows each action
//     as it is at the appliance clock.
//   - ActionWindow (--action-window event|change): what the Antigena window filters on, UNVERIFIED
//     in the reference: start (event, the default and harsher) or the current updated (change).
//     Without a window /antigena returns the current actions and those that expired in the last
//     14 days, as the reference says (cleared ones only with includecleared).
//   - ClockOffset (--clock-offset DUR): the appliance clock is Options.Now plus the offset; its
//     Date header, the ±30 minute DTAPI-Date check (400 {"response":"API DATE ERROR"}),
//     visibility and snapshots all use it.
//
// Transient faults for a time span are scripted faults with Fault.For (spec key for=DUR): every
// matching request fails for that long on the appliance clock from the first one, then the
// fault is dropped. The kinds that clear by themselves on a real appliance are TransientFaults:
// date_error ("API DATE ERROR for 10 minutes": date_error,for=10m), signature_error (a token
// rotation), login_redirect (302 to /login) and maintenance (an HTML maintenance page with a
// 5xx, status=CODE, default 503).
//
// # Ground truth
//
// Due(service, start, end, at) (control API: GET /_dtfleet/truth/due?service=S&start=T&end=T&at=T)
// is what a complete collector must have delivered by appliance time at of the events with event
// time in [start, end): every breach once (key pbid) created by then, late ones included; every
// AI Analyst event once (key id) visible by then; every state each Antigena action reached by
// then, once (key "<codeid>:<state>", state created, extended, cleared or expired, with its
// updated time). TruthKey gives a delivered event the same key, reading an action's state from
// its fields. Keys, KeysIn and AllEvents stay what they were: every event of the range, whether
// visible yet or not, and Antigena actions by codeid only.
package darktracetest

import (
	"bufio"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// Default tokens, used when Options leaves them empty. They are test tokens: printing them is
// fine.
const (
	DefaultPublicToken  = "dtfleet-fake-public-token"
	DefaultPrivateToken = "dtfleet-fake-private-token"
)

// DefaultEventsPerHour is the generation rate of each windowed service when Options does not
// set it.
var DefaultEventsPerHour = map[string]float64{
	config.ServiceModelBreaches:  12,
	config.ServiceIncidentEvents: 2,
	config.ServiceAntigena:       4,
}

// MaxSkew is how far DTAPI-Date may be from the fake's clock.
const MaxSkew = 30 * time.Minute

// Options configures a fake appliance. The zero value is usable.
type Options struct {
	// PublicToken and PrivateToken are the accepted token pair (defaults DefaultPublicToken,
	// DefaultPrivateToken).
	PublicToken, PrivateToken string
	// Seed selects the dataset.
	Seed int64
	// Start and End bound the data: events exist with event time in [Start, End). Zero End
	// means the next full hour after Now at construction; zero Start means End minus 7 days.
	Start, End time.Time
	// EventsPerHour is the mean number of events per hour of each windowed service
	// (config.Service* names); services missing from the map take DefaultEventsPerHour.
	EventsPerHour map[string]float64
	// EventSize is the approximate size in bytes of a model breach; 0 keeps the sample's size
	// (about 6 KB). Smaller values use a trimmed breach; larger ones pad the description.
	EventSize int
	// Latency and Jitter delay every response by Latency ± Jitter (uniform).
	Latency, Jitter time.Duration
	// LatencyPerInFlight models an appliance that slows down under load: every response is
	// delayed by this much more for each other request being served when it arrives
	// (latency = Latency + LatencyPerInFlight × (requests in flight - 1)).
	LatencyPerInFlight time.Duration
	// RateLimitAbove, when positive, answers 429 (Retry-After: 1) to a request that arrives
	// while more than this many requests are being served, as an overloaded appliance or a
	// proxy in front of it would. Throttled counts them.
	RateLimitAbove int
	// Now is the base clock; nil means time.Now. The appliance's clock (date checks, the Date
	// header, visibility, snapshots) is Now plus Untidy.ClockOffset.
	Now func() time.Time
	// Faults configures fault injection.
	Faults Faults
	// Untidy turns on the real world's untidiness: late breaches, AI Analyst events that appear
	// after their createdAt, Antigena actions that change, a skewed appliance clock. The zero
	// value is tidy.
	Untidy Untidiness
	// Realistic turns on all of RealisticUntidiness: each Untidy field left zero takes the
	// realistic value (the window readings stay as Untidy sets them).
	Realistic bool
	// Logger receives one debug line per request; nil discards.
	Logger *slog.Logger
}

// Handler is the fake appliance's http.Handler. It is safe for concurrent use.
type Handler struct {
	opts   Options
	tpl    *templates
	now    func() time.Time
	logger *slog.Logger

	mu          sync.Mutex
	rng         *rand.Rand // faults and jitter
	script      []*Fault
	inputErrors map[inputErrorKey]bool
	perEndpoint map[string]int64

	requests    atomic.Int64
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	throttled   atomic.Int64

	closing   chan struct{}
	closeOnce sync.Once
}

// NewHandler returns a Handler for opts. It panics only if the embedded samples are corrupt.
func NewHandler(opts Options) *Handler {
	tpl, err := loadTemplates()
	if err != nil {
		panic(fmt.Sprintf("darktracetest: loading embedded samples: %v", err))
	}
	opts.PublicToken = cmp.Or(opts.PublicToken, DefaultPublicToken)
	opts.PrivateToken = cmp.Or(opts.PrivateToken, DefaultPrivateToken)
	if opts.Realistic {
		r := RealisticUntidiness()
		u := &opts.Untidy
		u.LateBreachShare = cmp.Or(u.LateBreachShare, r.LateBreachShare)
		u.MaxBreachDelay = cmp.Or(u.MaxBreachDelay, r.MaxBreachDelay)
		u.IncidentDelay = cmp.Or(u.IncidentDelay, r.IncidentDelay)
		u.ActionLifecycle = u.ActionLifecycle || r.ActionLifecycle
		u.ClockOffset = cmp.Or(u.ClockOffset, r.ClockOffset)
	}
	opts.Untidy = opts.Untidy.withDefaults()
	base := opts.Now
	if base == nil {
		base = time.Now
	}
	now := base
	if off := opts.Untidy.ClockOffset; off != 0 {
		now = func() time.Time { return base().Add(off) }
	}
	if opts.End.IsZero() {
		opts.End = now().UTC().Truncate(time.Hour).Add(time.Hour)
	}
	if opts.Start.IsZero() {
		opts.Start = opts.End.Add(-7 * 24 * time.Hour)
	}
	rates := maps.Clone(DefaultEventsPerHour)
	maps.Copy(rates, opts.EventsPerHour)
	opts.EventsPerHour = rates
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{
		opts:        opts,
		tpl:         tpl,
		now:         now,
		logger:      logger,
		rng:         rand.New(rand.NewPCG(uint64(opts.Seed), 0x6661756c74)),
		inputErrors: map[inputErrorKey]bool{},
		perEndpoint: map[string]int64{},
		closing:     make(chan struct{}),
	}
	for _, f := range opts.Faults.Script {
		h.script = append(h.script, &f)
	}
	return h
}

// Options returns the handler's options with defaults filled in.
func (h *Handler) Options() Options { return h.opts }

// Close makes every stalled or delayed request return at once. The handler keeps serving.
func (h *Handler) Close() { h.closeOnce.Do(func() { close(h.closing) }) }

// Requests returns the number of requests received.
func (h *Handler) Requests() int64 { return h.requests.Load() }

// EndpointRequests returns the number of requests received for a path, e.g. "/modelbreaches".
func (h *Handler) EndpointRequests(path string) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.perEndpoint[path]
}

// MaxInFlight returns the most requests that were being served at the same time.
func (h *Handler) MaxInFlight() int64 { return h.maxInFlight.Load() }

// InFlight returns the number of requests being served now.
func (h *Handler) InFlight() int64 { return h.inFlight.Load() }

// Throttled returns the number of requests answered 429 because more than
// Options.RateLimitAbove were in flight.
func (h *Handler) Throttled() int64 { return h.throttled.Load() }

// endpoints maps paths to services.
var endpoints = map[string]string{
	"/modelbreaches":            config.ServiceModelBreaches,
	"/aianalyst/incidentevents": config.ServiceIncidentEvents,
	"/antigena":                 config.ServiceAntigena,
	"/status":                   config.ServiceStatus,
	"/summarystatistics":        config.ServiceSummary,
}

// endpointOf returns a service's path.
func endpointOf(service string) string {
	for p, s := range endpoints {
		if s == service {
			return p
		}
	}
	return "/" + service
}

// errAbort stops a response that a fault cut short.
var errAbort = errors.New("response aborted by an injected fault")

// ServeHTTP serves one API request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	h.requests.Add(1)
	n := h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	for {
		m := h.maxInFlight.Load()
		if n <= m || h.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	path := r.URL.Path
	h.mu.Lock()
	h.perEndpoint[path]++
	h.mu.Unlock()
	rec := &statusRecorder{ResponseWriter: w}
	if lim := h.opts.RateLimitAbove; lim > 0 && n > int64(lim) {
		h.throttled.Add(1)
		rec.Header().Set("Retry-After", "1")
		writeJSON(rec, http.StatusTooManyRequests, map[string]string{"error": "Too Many Requests"})
	} else {
		h.serve(rec, r, n)
	}
	h.logger.Debug("darktracetest request", "method", r.Method, "path", path, "query", r.URL.RawQuery,
		"status", rec.status, "events", rec.events, "duration", time.Since(t0))
}

func (h *Handler) serve(w *statusRecorder, r *http.Request, inFlight int64) {
	if !h.delay(r.Context(), inFlight) {
		return
	}
	// The appliance dates its answers by its own clock: with a skewed clock, the Date header is
	// what a client compares its DTAPI-Date with.
	w.Header().Set("Date", h.now().UTC().Format(http.TimeFormat))
	if r.Method != http.MethodGet {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "Method Not Allowed"})
		return
	}
	if msg := h.authenticate(r); msg != "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"response": msg})
		return
	}
	service, ok := endpoints[r.URL.Path]
	if !ok {
		redirect(w, "/login")
		return
	}
	q, err := parseQuery(service, r.URL.RawQuery, h.now())
	if err != nil {
		h.logger.Debug("darktracetest INPUT ERROR", "path", r.URL.Path, "error", err)
		inputError(w, r.URL.Path)
		return
	}
	fault := h.pickFault(r.URL.Path, q.start, q.end)
	if fault != nil && !h.preBodyFault(w, r, fault) {
		return
	}
	var mid *Fault
	if fault != nil && (fault.Kind == FaultReset || fault.Kind == FaultTruncate || fault.Kind == FaultStall) {
		mid = fault
	}
	s := &sink{w: w, bw: bufio.NewWriterSize(w, 64<<10), fault: mid, h: h, ctx: r.Context()}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if err := h.writeBody(s, service, q); err != nil {
		if errors.Is(err, errAbort) {
			return
		}
		h.logger.Debug("darktracetest response failed", "path", r.URL.Path, "error", err)
		return
	}
	_ = s.bw.Flush()
}

// delay waits Latency ± Jitter, plus LatencyPerInFlight for each other request in flight; it
// returns false if the request or the handler ended first.
func (h *Handler) delay(ctx context.Context, inFlight int64) bool {
	d := h.latency(inFlight)
	if j := h.opts.Jitter; j > 0 {
		h.mu.Lock()
		d += time.Duration(h.rng.Int64N(int64(2*j)+1)) - j
		h.mu.Unlock()
	}
	if d <= 0 {
		return true
	}
	return h.wait(ctx, d)
}

// latency is the delay of a response that arrived with inFlight requests being served (itself
// included), before jitter.
func (h *Handler) latency(inFlight int64) time.Duration {
	return h.opts.Latency + h.opts.LatencyPerInFlight*time.Duration(max(inFlight-1, 0))
}

// wait sleeps d (forever when d is 0); it returns false if ctx or the handler ended first.
func (h *Handler) wait(ctx context.Context, d time.Duration) bool {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
		return true
	case <-ctx.Done():
		return false
	case <-h.closing:
		return false
	}
}

// dateLayouts are the DTAPI-Date formats the fake accepts: the guide's list, and ISO 8601 with
// fractions and offsets as production clients send.
var dateLayouts = []string{
	"20060102T150405",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05",
	"Mon, 02 Jan 2006 15:04:05",
	"Mon, 02 Jan 2006 15:04:05 MST",
	"Mon Jan _2 15:04:05 2006",
	"2006-01-02T15:04:05.999999999",
	time.RFC3339Nano,
}

// parseDate parses a DTAPI-Date value; times without a zone are UTC.
func parseDate(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	for _, layout := range dateLayouts {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// authenticate checks the token, the date and the signature, and returns the error value for
// the 400 body, or "".
func (h *Handler) authenticate(r *http.Request) string {
	if r.Header.Get("DTAPI-Token") != h.opts.PublicToken {
		return "API SIGNATURE ERROR"
	}
	date := r.Header.Get("DTAPI-Date")
	t, ok := parseDate(date)
	if !ok {
		return "API DATE ERROR"
	}
	if skew := h.now().Sub(t); skew > MaxSkew || skew < -MaxSkew {
		return "API DATE ERROR"
	}
	apiRequest := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		apiRequest += "?" + r.URL.RawQuery
	}
	mac := hmac.New(sha1.New, []byte(h.opts.PrivateToken))
	io.WriteString(mac, apiRequest+"\n"+h.opts.PublicToken+"\n"+date)
	want := hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(r.Header.Get("DTAPI-Signature")))) {
		return "API SIGNATURE ERROR"
	}
	return ""
}

// preBodyFault answers a fault that replaces the response; it returns true when the normal
// response must follow (a stall that ended, or a mid-body fault).
func (h *Handler) preBodyFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	retryAfter := func(d time.Duration) {
		if d <= 0 {
			return
		}
		if f.RetryAfterDate {
			w.Header().Set("Retry-After", h.now().Add(d).UTC().Format(http.TimeFormat))
		} else {
			w.Header().Set("Retry-After", strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10))
		}
	}
	switch f.Kind {
	case FaultStatus:
		code := cmp.Or(f.Status, http.StatusServiceUnavailable)
		retryAfter(f.RetryAfter)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(code)
		fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>\n", code, http.StatusText(code))
	case FaultRateLimit:
		retryAfter(cmp.Or(f.RetryAfter, time.Second))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "Too Many Requests"})
	case FaultStall:
		if f.AfterEvents > 0 {
			return true
		}
		return h.wait(r.Context(), f.Stall)
	case FaultReset, FaultTruncate:
		return true
	case FaultLoginPage:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, loginPage)
	case FaultRedirect403:
		redirect(w, "/403")
	case FaultForbidden:
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "Forbidden"})
	case FaultInputError:
		inputError(w, r.URL.Path)
	case FaultSignatureError:
		writeJSON(w, http.StatusBadRequest, map[string]string{"response": "API SIGNATURE ERROR"})
	case FaultDateError:
		writeJSON(w, http.StatusBadRequest, map[string]string{"response": "API DATE ERROR"})
	case FaultLoginRedirect:
		redirect(w, "/login")
	case FaultMaintenance:
		code := cmp.Or(f.Status, http.StatusServiceUnavailable)
		retryAfter(f.RetryAfter)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(code)
		io.WriteString(w, maintenancePage)
	}
	return false
}

// loginPage is what an appliance serves a token without the needed permission.
const loginPage = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Log In | Darktrace</title></head>
<body><form method="post" action="/login"><input name="username"><input name="password" type="password"></form></body>
</html>
`

// maintenancePage is what an appliance (or the proxy in front of it) serves during an upgrade.
const maintenancePage = `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Maintenance | Darktrace</title></head>
<body><h1>Darktrace is being updated</h1><p>The Threat Visualizer will be back shortly.</p></body>
</html>
`

// writeJSON writes a JSON error body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b)
}

// redirect answers 302 as the appliance does.
func redirect(w http.ResponseWriter, to string) {
	w.Header().Set("Location", to)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusFound)
	io.WriteString(w, "Found. Redirecting to "+to)
}

// inputError answers 400 {"<first path segment>": "INPUT ERROR"}.
func inputError(w http.ResponseWriter, path string) {
	seg, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	writeJSON(w, http.StatusBadRequest, map[string]string{seg: "INPUT ERROR"})
}

// statusRecorder remembers the status and the event count, for the debug log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	events int
}

// WriteHeader records the status.
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// sink writes a response body, firing a mid-body fault at its event.
type sink struct {
	w     *statusRecorder
	bw    *bufio.Writer
	fault *Fault
	h     *Handler
	ctx   context.Context
	n     int
}

// raw writes structural bytes.
func (s *sink) raw(b string) error {
	_, err := s.bw.WriteString(b)
	return err
}

// event writes sep and one event, after firing the fault if this is its event.
func (s *sink) event(sep string, ev []byte) error {
	if s.fault != nil && s.n == s.fault.AfterEvents {
		if err := s.fire(sep, ev); err != nil {
			return err
		}
	}
	if _, err := s.bw.WriteString(sep); err != nil {
		return err
	}
	if _, err := s.bw.Write(ev); err != nil {
		return err
	}
	s.n++
	s.w.events++
	return nil
}

// end fires a fault that has not fired yet (fewer events than AfterEvents), then writes tail.
func (s *sink) end(tail string) error {
	if s.fault != nil {
		if err := s.fire("", nil); err != nil {
			return err
		}
	}
	return s.raw(tail)
}

// fire performs the mid-body fault; it returns errAbort when the response must stop.
func (s *sink) fire(sep string, ev []byte) error {
	f := s.fault
	s.fault = nil
	rc := http.NewResponseController(s.w)
	switch f.Kind {
	case FaultTruncate:
		s.bw.WriteString(sep)
		s.bw.Write(ev[:len(ev)/2])
		s.bw.Flush()
		return errAbort
	case FaultReset:
		s.bw.Flush()
		rc.Flush()
		conn, _, err := rc.Hijack()
		if err != nil {
			// HTTP/2 cannot hijack: abort the stream instead.
			panic(http.ErrAbortHandler)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // send RST, not FIN
		}
		conn.Close()
		return errAbort
	case FaultStall:
		s.bw.Flush()
		rc.Flush()
		if !s.h.wait(s.ctx, f.Stall) {
			return errAbort
		}
	}
	return nil
}

// writeBody streams the response of service for q.
func (h *Handler) writeBody(s *sink, service string, q *query) error {
	now := h.now()
	switch service {
	case config.ServiceStatus, config.ServiceSummary:
		var b []byte
		var err error
		if service == config.ServiceStatus {
			b, err = h.statusBody(now, q.status)
		} else {
			b, err = h.summaryBody(now, q.summary)
		}
		if err != nil {
			return err
		}
		if err := s.event("", b); err != nil {
			return err
		}
		return s.end("")
	case config.ServiceAntigena:
		object := q.fullDevices || q.connections
		sep := ""
		if object {
			if err := s.raw(`{"actions":[`); err != nil {
				return err
			}
		} else if err := s.raw("["); err != nil {
			return err
		}
		rd := &renderer{h: h, now: now.UnixMilli()}
		var dids []int
		var conns []rec
		err := h.each(service, q, now, func(r *rec) error {
			if q.fullDevices {
				dids = append(dids, r.did)
			}
			if q.connections && !r.manual {
				conns = append(conns, *r)
			}
			err := s.event(sep, rd.render(service, r, q.history))
			sep = ","
			return err
		})
		if err != nil {
			return err
		}
		if !object {
			return s.end("]")
		}
		if err := s.end("]"); err != nil {
			return err
		}
		if q.fullDevices {
			if err := h.writeDevices(s, dids, now); err != nil {
				return err
			}
		}
		if q.connections {
			if err := h.writeConnections(s, conns); err != nil {
				return err
			}
		}
		return s.raw("}")
	default:
		if err := s.raw("["); err != nil {
			return err
		}
		rd := &renderer{h: h, now: now.UnixMilli()}
		sep := ""
		err := h.each(service, q, now, func(r *rec) error {
			err := s.event(sep, rd.render(service, r, false))
			sep = ","
			return err
		})
		if err != nil {
			return err
		}
		return s.end("]")
	}
}

// writeDevices writes /antigena's "devices" member for fulldevicedetails=true.
func (h *Handler) writeDevices(s *sink, dids []int, now time.Time) error {
	slices.Sort(dids)
	dids = slices.Compact(dids)
	if err := s.raw(`,"devices":[`); err != nil {
		return err
	}
	for i, did := range dids {
		b, _ := marshal(map[string]any{
			"did": did, "ip": ipOf(did), "hostname": hostOf(did), "macaddress": fmt.Sprintf("00:50:56:%02x:%02x:%02x", did>>16&0xff, did>>8&0xff, did&0xff),
			"typename": "desktop", "typelabel": "Desktop", "firstSeen": h.opts.Start.UnixMilli(), "lastSeen": now.UnixMilli(),
		})
		if i > 0 {
			b = append([]byte{','}, b...)
		}
		if err := s.raw(string(b)); err != nil {
			return err
		}
	}
	return s.raw("]")
}

// writeConnections writes /antigena's "connections" member for includeconnections=true.
func (h *Handler) writeConnections(s *sink, actions []rec) error {
	if err := s.raw(`,"connections":[`); err != nil {
		return err
	}
	for i, r := range actions {
		kind := actionKinds[r.variant]
		b, _ := marshal(map[string]any{
			"action": kind[0], "label": kind[1], "did": r.did, "direction": "outgoing", "ip": ipOf(r.did),
			"port": 443, "timems": r.t, "time": time.UnixMilli(r.t).UTC().Format(time.DateTime),
		})
		if i > 0 {
			b = append([]byte{','}, b...)
		}
		if err := s.raw(string(b)); err != nil {
			return err
		}
	}
	return s.raw("]")
}

// query is a parsed request.
type query struct {
	start, end time.Time // the window, inclusive; zero for snapshots
	noWindow   bool      // the request had no time parameter

	ack          bool // includeacknowledged
	creationTime bool // creationtime: filter breaches on creationTime
	minScore     float64
	pbid         int64
	did          int64

	allPinned  bool // includeallpinned
	onlyPinned bool
	uuid       string

	cleared     bool // includecleared
	history     bool
	connections bool
	fullDevices bool

	status  statusQuery
	summary summaryQuery
}

// param rules per endpoint: kind of value.
const (
	pTime = iota + 1
	pBool
	pNum
	pText
	pDate
)

var params = map[string]map[string]int{
	config.ServiceModelBreaches: {
		"starttime": pTime, "endtime": pTime, "from": pDate, "to": pDate, "includeacknowledged": pBool,
		"includesuppressed": pBool, "includebreachurl": pBool, "minimal": pBool, "deviceattop": pBool,
		"historicmodelonly": pBool, "creationtime": pBool, "minscore": pNum, "pbid": pNum, "pid": pNum,
		"did": pNum, "uuid": pText, "expandenums": pBool, "responsedata": pText, "saasonly": pBool,
		"saasfilter": pText, "group": pText,
	},
	config.ServiceIncidentEvents: {
		"starttime": pTime, "endtime": pTime, "includeacknowledged": pBool, "includeallpinned": pBool,
		"includeonlypinned": pBool, "includeincidenteventurl": pBool, "locale": pText, "groupcompliance": pBool,
		"groupsuspicious": pBool, "groupcritical": pBool, "minscore": pNum, "maxscore": pNum,
		"mingroupscore": pNum, "maxgroupscore": pNum, "did": pNum, "excludedid": pNum, "sid": pNum,
		"excludesid": pNum, "master": pNum, "saasonly": pBool, "groupid": pText, "uuid": pText,
	},
	config.ServiceAntigena: {
		"starttime": pTime, "endtime": pTime, "from": pDate, "to": pDate, "includecleared": pBool,
		"includehistory": pBool, "needconfirming": pBool, "includeconnections": pBool,
		"fulldevicedetails": pBool, "responsedata": pText, "pbid": pNum, "did": pNum,
	},
	config.ServiceStatus: {
		"includechildren": pBool, "fast": pBool, "responsedata": pText, "format": pText,
	},
	config.ServiceSummary: {
		"responsedata": pText, "eventtype": pText, "endtime": pTime, "to": pDate, "hours": pNum,
		"csensor": pBool, "mitreTactics": pBool,
	},
}

// windowDefaults are the window each endpoint assumes for a missing time parameter.
var windowDefaults = map[string]time.Duration{
	config.ServiceModelBreaches:  365 * 24 * time.Hour, // "beginning of memory, one year per response"
	config.ServiceIncidentEvents: 7 * 24 * time.Hour,
	config.ServiceAntigena:       14 * 24 * time.Hour, // actions of the last 14 days
}

// parseQuery validates the raw query of service and applies the documented defaults.
func parseQuery(service, raw string, now time.Time) (*query, error) {
	q := &query{allPinned: true, status: statusQuery{children: true}}
	allowed := params[service]
	var haveStart, haveEnd bool
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		kind, ok := allowed[k]
		if !ok {
			return nil, fmt.Errorf("unknown parameter %q", k)
		}
		var b bool
		var num float64
		var t time.Time
		switch kind {
		case pTime:
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s=%q is not epoch milliseconds", k, v)
			}
			t = time.UnixMilli(ms).UTC()
		case pBool:
			switch strings.ToLower(v) {
			case "true":
				b = true
			case "false":
			default:
				return nil, fmt.Errorf("%s=%q is not true or false", k, v)
			}
		case pNum:
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("%s=%q is not a number", k, v)
			}
			num = f
		case pDate:
			s, err := url.QueryUnescape(v)
			if err == nil {
				s = strings.TrimSuffix(strings.Replace(s, "T", " ", 1), "Z")
				if i := strings.IndexByte(s, '.'); i > 0 {
					s = s[:i]
				}
				t, err = time.ParseInLocation(time.DateTime, s, time.UTC)
			}
			if err != nil {
				return nil, fmt.Errorf("%s=%q is not YYYY-MM-DD HH:MM:SS", k, v)
			}
		}
		switch k {
		case "starttime", "from":
			q.start, haveStart = t, true
		case "endtime", "to":
			if service == config.ServiceSummary {
				q.summary.endTime = t
			} else {
				q.end, haveEnd = t, true
			}
		case "includeacknowledged":
			q.ack = b
		case "creationtime":
			q.creationTime = b
		case "minscore":
			q.minScore = num
		case "pbid":
			q.pbid = int64(num)
		case "did":
			q.did = int64(num)
		case "includeallpinned":
			q.allPinned = b
		case "includeonlypinned":
			q.onlyPinned = b
		case "uuid":
			q.uuid = v
		case "includecleared":
			q.cleared = b
		case "includehistory":
			q.history = b
		case "includeconnections":
			q.connections = b
		case "fulldevicedetails":
			q.fullDevices = b
		case "includechildren":
			q.status.children = b
		case "fast":
			q.status.fast = b
		case "responsedata":
			q.status.responseData = strings.Split(v, ",")
			q.summary.responseData = q.status.responseData
		case "eventtype":
			q.summary.eventType = v
		case "hours":
			// Observed on 7.0.42: any request with hours is rejected.
			return nil, errors.New("hours is rejected")
		}
	}
	span, windowed := windowDefaults[service]
	if !windowed {
		return q, nil
	}
	switch {
	case haveStart && haveEnd:
	case haveStart:
		q.end = now
	case haveEnd:
		q.start = q.end.Add(-span)
	default:
		q.start, q.end, q.noWindow = now.Add(-span), now, true
	}
	if q.end.Before(q.start) {
		return nil, fmt.Errorf("endtime %v before starttime %v", q.end, q.start)
	}
	return q, nil
}

// each calls fn with every event of service that a request q returns at now, in response
// order: events in the window (inclusive at both ends) that are visible, match the filters,
// and, for AI Analyst, the pinned events outside the window unless includeallpinned=false.
func (h *Handler) each(service string, q *query, now time.Time, fn func(*rec) error) error {
	nowMs := now.UnixMilli()
	s, e := q.start.UnixMilli(), q.end.UnixMilli()
	lo, hi := s, e
	lo -= h.lag(service, q) // an event that appeared or changed in the window may have an earlier time
	unwindowedActions := service == config.ServiceAntigena && q.noWindow
	if unwindowedActions {
		// Current actions and those that expired in the last 14 days, whenever they started.
		lo, hi = nowMs-windowDefaults[service].Milliseconds()-maxActionLife, nowMs
	}
	visit := func(r *rec, inWindow bool) error {
		if r.created > nowMs || r.t < h.opts.Start.UnixMilli() || r.t >= h.opts.End.UnixMilli() {
			return nil
		}
		switch service {
		case config.ServiceModelBreaches:
			if r.ack && !q.ack || r.score < q.minScore || q.pbid != 0 && r.id != q.pbid || q.did != 0 && int64(r.did) != q.did {
				return nil
			}
		case config.ServiceIncidentEvents:
			if r.ack && !q.ack || q.onlyPinned && !r.pinned || q.uuid != "" && uuidString(r.uuid) != q.uuid || q.did != 0 && int64(r.did) != q.did {
				return nil
			}
		case config.ServiceAntigena:
			cur := h.current(r, nowMs)
			if cur.state == StateCleared && !q.cleared || q.pbid != 0 && (r.manual || r.id-7 != q.pbid) || q.did != 0 && int64(r.did) != q.did {
				return nil
			}
			if unwindowedActions {
				inWindow = cur.expires >= nowMs-windowDefaults[service].Milliseconds()
			}
		}
		if !inWindow {
			return nil
		}
		return fn(r)
	}
	first := floorDiv(max(lo, h.opts.Start.UnixMilli()), hourMs)
	last := floorDiv(min(hi, h.opts.End.UnixMilli()-1), hourMs)
	for hour := first; hour <= last; hour++ {
		recs := h.genHour(service, hour)
		for i := range recs {
			r := &recs[i]
			key := h.windowKey(service, q, r, nowMs)
			if err := visit(r, key >= s && key <= e); err != nil {
				return err
			}
		}
	}
	if service == config.ServiceIncidentEvents && q.allPinned {
		// Pinned events come back whatever the window.
		// Events are invisible before their time, so the pinned ones lie before now.
		upto := min(h.opts.End.UnixMilli()-1, nowMs)
		for hour := floorDiv(h.opts.Start.UnixMilli(), hourMs); hour <= floorDiv(upto, hourMs); hour++ {
			if !h.pinHour(hour) {
				continue
			}
			for _, r := range h.genHour(service, hour) {
				if r.pinned && (r.t < s || r.t > e) {
					if err := visit(&r, true); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// floorDiv divides rounding toward negative infinity.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// clientQuery is what dtfleet's client sends for a window: acknowledged and cleared events
// included, pinned events outside the window excluded, children and fast status.
func clientQuery(start, end time.Time) *query {
	return &query{
		start: start, end: end, ack: true, cleared: true, allPinned: false,
		status: statusQuery{fast: true, children: true},
	}
}

// Events returns the events a request of service for the window [start, end] (both inclusive,
// on the service's event time) returns now, as dtfleet's client asks for them
// (includeacknowledged=true, includeallpinned=false, includecleared=true, status with
// fast=true&includechildren=true), in response order, without faults. For modelbreaches pass the
// request's starttime (the slot's start minus the look-back). For the snapshot services it
// returns the one document, and start and end are ignored.
func (h *Handler) Events(service string, start, end time.Time) [][]byte {
	var out [][]byte
	now := h.now()
	switch service {
	case config.ServiceStatus:
		b, _ := h.statusBody(now, clientQuery(start, end).status)
		return [][]byte{b}
	case config.ServiceSummary:
		b, _ := h.summaryBody(now, summaryQuery{})
		return [][]byte{b}
	}
	rd := &renderer{h: h, now: now.UnixMilli()}
	_ = h.each(service, clientQuery(start, end), now, func(r *rec) error {
		out = append(out, slices.Clone(rd.render(service, r, false)))
		return nil
	})
	return out
}

// AllEvents returns every event of service with event time in [start, end) (half open),
// whether or not it is visible yet, acknowledged, cleared or pinned, sorted by event time. It is
// what a collector must eventually deliver for that range.
func (h *Handler) AllEvents(service string, start, end time.Time) [][]byte {
	var out [][]byte
	rd := &renderer{h: h, now: h.now().UnixMilli()}
	for _, r := range h.allRecs(service, start, end) {
		out = append(out, slices.Clone(rd.render(service, &r, false)))
	}
	return out
}

// allRecs returns every record of service with event time in [start, end) ∩ [Start, End).
func (h *Handler) allRecs(service string, start, end time.Time) []rec {
	lo := max(start.UnixMilli(), h.opts.Start.UnixMilli())
	hi := min(end.UnixMilli(), h.opts.End.UnixMilli())
	var out []rec
	if hi <= lo {
		return nil
	}
	for hour := floorDiv(lo, hourMs); hour <= floorDiv(hi-1, hourMs); hour++ {
		for _, r := range h.genHour(service, hour) {
			if r.t >= lo && r.t < hi {
				out = append(out, r)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b rec) int { return cmp.Compare(a.t, b.t) })
	return out
}

// Keys returns the sorted keys (see Key) of every event of service in the whole data span
// [Start, End).
func (h *Handler) Keys(service string) []string {
	return h.KeysIn(service, h.opts.Start, h.opts.End)
}

// KeysIn returns the sorted keys (see Key) of every event of service with event time in
// [start, end) ∩ [Start, End), whether or not it is visible yet.
func (h *Handler) KeysIn(service string, start, end time.Time) []string {
	var keys []string
	for _, r := range h.allRecs(service, start, end) {
		switch service {
		case config.ServiceIncidentEvents:
			keys = append(keys, uuidString(r.uuid))
		default:
			keys = append(keys, strconv.FormatInt(r.id, 10))
		}
	}
	slices.Sort(keys)
	return keys
}

// Key returns an event's key as DESIGN.md defines it: pbid for modelbreaches, id for
// aianalyst_incidentevents, codeid for antigena (numbers in decimal). Snapshots
// (status, summarystatistics) have no key: it returns "". Unparsable events give "".
func Key(service string, raw []byte) string {
	var field string
	switch service {
	case config.ServiceModelBreaches:
		field = "pbid"
	case config.ServiceIncidentEvents:
		field = "id"
	case config.ServiceAntigena:
		field = "codeid"
	default:
		return ""
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return ""
	}
	v, ok := m[field]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(v, &n) == nil {
		return n.String()
	}
	return ""
}

// Server is a fake appliance listening on loopback, like httptest.Server.
type Server struct {
	*Handler
	// URL is the base URL, http://127.0.0.1:port or https://….
	URL string
	hs  *httptest.Server
}

// NewServer starts a plain HTTP fake appliance. Close it when done.
func NewServer(opts Options) *Server {
	h := NewHandler(opts)
	hs := httptest.NewServer(h)
	return &Server{Handler: h, URL: hs.URL, hs: hs}
}

// NewTLSServer starts a fake appliance over HTTPS with httptest's self-signed certificate (see
// Certificate and Client). Close it when done.
func NewTLSServer(opts Options) *Server {
	h := NewHandler(opts)
	hs := httptest.NewTLSServer(h)
	return &Server{Handler: h, URL: hs.URL, hs: hs}
}

// Close releases stalled requests and shuts the server down, blocking until every request
// has finished.
func (s *Server) Close() {
	s.Handler.Close()
	s.hs.CloseClientConnections()
	s.hs.Close()
}

// CloseClientConnections drops every open connection to the server.
func (s *Server) CloseClientConnections() { s.hs.CloseClientConnections() }

// Certificate returns the TLS server's certificate, or nil for a plain server.
func (s *Server) Certificate() *x509.Certificate { return s.hs.Certificate() }

// Client returns an HTTP client that trusts the server's certificate.
func (s *Server) Client() *http.Client { return s.hs.Client() }
