package darktracetest

import (
	"fmt"
	"slices"
	"time"
)

// FaultKind is a way the fake appliance misbehaves.
type FaultKind int

const (
	// FaultStatus answers with Fault.Status (default 503) and a short body.
	FaultStatus FaultKind = iota + 1
	// FaultRateLimit answers 429 with a Retry-After header (Fault.RetryAfter, default 1s).
	FaultRateLimit
	// FaultStall hangs: before the headers when AfterEvents is 0, or after AfterEvents events
	// of the body otherwise; for Fault.Stall (then answers normally), or, when Stall is 0, until
	// the client gives up or the server closes.
	FaultStall
	// FaultReset sends AfterEvents complete events, then drops the connection (TCP reset).
	FaultReset
	// FaultTruncate sends AfterEvents complete events and half of the next one, then ends the
	// response cleanly, leaving truncated JSON.
	FaultTruncate
	// FaultLoginPage answers 200 with the HTML login page, as an appliance does for a token
	// without the needed permission.
	FaultLoginPage
	// FaultRedirect403 answers 302 to /403 ("Found. Redirecting to /403").
	FaultRedirect403
	// FaultForbidden answers 403 {"error":"Forbidden"}.
	FaultForbidden
	// FaultInputError answers 400 {"<endpoint>":"INPUT ERROR"}.
	FaultInputError
	// FaultSignatureError answers 400 {"response":"API SIGNATURE ERROR"}.
	FaultSignatureError
	// FaultDateError answers 400 {"response":"API DATE ERROR"}.
	FaultDateError
	// FaultLoginRedirect answers 302 to the login page ("Found. Redirecting to /login"), as an
	// appliance does while its authentication restarts or a session front end intervenes.
	FaultLoginRedirect
	// FaultMaintenance answers Fault.Status (default 503) with an HTML maintenance page, as an
	// appliance or its proxy does during an upgrade.
	FaultMaintenance
)

var faultNames = map[FaultKind]string{
	FaultStatus: "status", FaultRateLimit: "rate_limit", FaultStall: "stall", FaultReset: "reset",
	FaultTruncate: "truncate", FaultLoginPage: "login_page", FaultRedirect403: "redirect_403",
	FaultForbidden: "forbidden", FaultInputError: "input_error", FaultSignatureError: "signature_error",
	FaultDateError: "date_error", FaultLoginRedirect: "login_redirect", FaultMaintenance: "maintenance",
}

// String names the fault kind.
func (k FaultKind) String() string {
	if s, ok := faultNames[k]; ok {
		return s
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// RetryableFaults are the kinds a client should retry; they are the default mix of random
// faults.
var RetryableFaults = []FaultKind{FaultStatus, FaultRateLimit, FaultStall, FaultReset, FaultTruncate}

// TransientFaults are the kinds that look permanent on one request but clear by themselves on a
// real appliance (a clock being corrected, a token pair being rotated, authentication or the
// appliance restarting): a client should retry them for a bounded time. Script them for a time
// span with Fault.For.
var TransientFaults = []FaultKind{FaultDateError, FaultSignatureError, FaultLoginRedirect, FaultMaintenance}

// Fault is one injected misbehaviour and the requests it hits.
type Fault struct {
	// Kind is what happens.
	Kind FaultKind
	// Endpoint, when set (e.g. "/modelbreaches"), limits the fault to that path.
	Endpoint string
	// Start and End, when set, limit the fault to requests whose window (starttime..endtime)
	// covers [Start, End]: the request for a slot [Start, End) with any look-back.
	Start, End time.Time
	// Times is how many requests the fault hits: 0 means once, a negative value means every
	// matching request until ClearFaults. It is ignored when For is set.
	Times int
	// For, when set, makes the fault hit every matching request for this long on the appliance's
	// clock, from the first request it hits; then it is dropped. "API DATE ERROR for 10
	// minutes" is Fault{Kind: FaultDateError, For: 10 * time.Minute}.
	For time.Duration
	// Status is FaultStatus's and FaultMaintenance's status code; 0 means 503.
	Status int
	// RetryAfter is sent as Retry-After by FaultRateLimit (0 means 1s) and, when set, by
	// FaultStatus.
	RetryAfter time.Duration
	// RetryAfterDate sends Retry-After as an HTTP date instead of seconds.
	RetryAfterDate bool
	// Stall is how long FaultStall hangs; 0 means until the client gives up.
	Stall time.Duration
	// AfterEvents is how many complete events FaultReset, FaultTruncate and a mid-body
	// FaultStall send first.
	AfterEvents int

	until time.Time // end of a For span, set when it first hits
}

// matches reports whether the fault applies to a request of path with window [s, e] (zero
// times when the request has no window).
func (f *Fault) matches(path string, s, e time.Time) bool {
	if f.Endpoint != "" && f.Endpoint != path {
		return false
	}
	if !f.Start.IsZero() && (s.IsZero() || s.After(f.Start)) {
		return false
	}
	if !f.End.IsZero() && (e.IsZero() || e.Before(f.End)) {
		return false
	}
	return true
}

// Faults configures fault injection.
type Faults struct {
	// Rate is the probability in [0, 1] that a request without a scripted fault gets a random
	// one.
	Rate float64
	// Kinds is the mix random faults are drawn from (uniformly); empty means RetryableFaults.
	Kinds []FaultKind
	// Script holds faults consumed in order: each request takes the first pending fault that
	// matches it. AddFault appends to it at run time.
	Script []Fault
}

// inputErrorKey identifies a persistent INPUT ERROR window.
type inputErrorKey struct {
	path       string
	start, end int64
}

// AddFault appends a scripted fault.
func (h *Handler) AddFault(f Fault) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.script = append(h.script, &f)
}

// ClearFaults drops every pending scripted fault (persistent INPUT ERROR windows stay).
func (h *Handler) ClearFaults() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.script = nil
}

// PendingFaults returns how many scripted faults have not fired yet or are still in their For
// span (unlimited ones count once).
func (h *Handler) PendingFaults() int {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, f := range h.script {
		if f.For <= 0 || f.until.IsZero() || now.Before(f.until) {
			n++
		}
	}
	return n
}

// SetInputError makes every request of service whose window covers [start, end] fail with 400
// INPUT ERROR while on is true, as a window the appliance rejects for good.
func (h *Handler) SetInputError(service string, start, end time.Time, on bool) {
	k := inputErrorKey{path: endpointOf(service), start: start.UnixMilli(), end: end.UnixMilli()}
	h.mu.Lock()
	defer h.mu.Unlock()
	if on {
		h.inputErrors[k] = true
	} else {
		delete(h.inputErrors, k)
	}
}

// pickFault returns the fault for a request, if any: a persistent INPUT ERROR, the first
// matching scripted fault, or a random one.
func (h *Handler) pickFault(path string, s, e time.Time) *Fault {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !s.IsZero() && !e.IsZero() {
		for k := range h.inputErrors {
			if k.path == path && s.UnixMilli() <= k.start && e.UnixMilli() >= k.end {
				return &Fault{Kind: FaultInputError}
			}
		}
	}
	now := h.now()
	for i := 0; i < len(h.script); i++ {
		f := h.script[i]
		if f.For > 0 && !f.until.IsZero() && !now.Before(f.until) {
			h.script = slices.Delete(h.script, i, i+1) // its span is over
			i--
			continue
		}
		if !f.matches(path, s, e) {
			continue
		}
		fired := *f
		switch {
		case f.For > 0:
			if f.until.IsZero() {
				f.until = now.Add(f.For)
			}
		case f.Times < 0:
		case f.Times > 1:
			f.Times--
		default:
			h.script = append(h.script[:i:i], h.script[i+1:]...)
		}
		return &fired
	}
	if h.opts.Faults.Rate > 0 && h.rng.Float64() < h.opts.Faults.Rate {
		kinds := h.opts.Faults.Kinds
		if len(kinds) == 0 {
			kinds = RetryableFaults
		}
		f := &Fault{Kind: kinds[h.rng.IntN(len(kinds))], AfterEvents: h.rng.IntN(4)}
		if f.Kind == FaultStall {
			f.AfterEvents = 0
		}
		return f
	}
	return nil
}
