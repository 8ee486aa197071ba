package darktrace

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// The seed document's PullError messages. Error.Error and the client's log lines use them so
// operators who know Devo's collector recognise them.
const (
	// PullErrorHTTP is PullError 300: the appliance answered with an HTTP error status (or with
	// a page that stands for one, such as a login page or a redirect).
	PullErrorHTTP = 300
	// PullErrorOther is PullError 301: anything apart from an HTTP status, such as a connection
	// error, a timeout or a malformed body.
	PullErrorOther = 301

	// PullErrorHTTPMessage is the seed's message for PullError 300.
	PullErrorHTTPMessage = "HTTP Error occurred while retrieving events from Darktrace server"
	// PullErrorOtherMessage is the seed's message for PullError 301.
	PullErrorOtherMessage = "Some error occurred while retrieving events from Darktrace server."
)

// Class says whether a failed request may succeed when repeated. It is the small set a caller
// switches on (see ClassOf and ClassAfter):
//
//   - Retryable: retry with backoff for as long as it takes (429, plain 5xx, timeouts, resets,
//     truncated bodies); nobody needs to act.
//   - Transient: retry with backoff, but only for a bounded time (ClassAfter, default
//     DefaultTransientFor): the failure usually clears by itself (a clock being corrected, a
//     token pair being rotated, authentication or the appliance restarting, an upgrade's
//     maintenance page), yet when it persists it is a configuration problem that someone must
//     fix, and it is then Terminal.
//   - Terminal: retrying cannot help until someone changes the configuration, the token's
//     permissions or the request itself (INPUT ERROR, a missing permission, an untrusted
//     certificate).
type Class int

const (
	// Retryable failures are transient: a later attempt of the same request may succeed.
	Retryable Class = iota + 1
	// Terminal failures repeat until someone changes the configuration, the tokens' permissions
	// or the request itself; retrying them only wastes the appliance's rate limit.
	Terminal
	// Transient failures look permanent on one request but usually clear within minutes; they
	// are retried for a bounded time and then count as Terminal (ClassAfter).
	Transient
)

// DefaultTransientFor is how long ClassAfter lets a Transient failure persist before it counts as
// Terminal, when the caller does not configure it: long enough for an NTP correction, a token
// rotation rolled out by hand or an appliance upgrade.
const DefaultTransientFor = time.Hour

// ClassOf returns the Class of the *Error in err's chain, or 0 when err is nil or carries no
// *Error (for example an error returned by the caller's own callback).
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return 0
}

// ClassAfter returns err's Class once the same request has been failing for failingFor (since
// its first failure): a Transient failure becomes Terminal when failingFor reaches limit. A zero
// limit means DefaultTransientFor; a negative one retries Transient failures without bound.
// Other classes are returned as ClassOf returns them.
func ClassAfter(err error, failingFor, limit time.Duration) Class {
	c := ClassOf(err)
	if c != Transient {
		return c
	}
	if limit == 0 {
		limit = DefaultTransientFor
	}
	if limit > 0 && failingFor >= limit {
		return Terminal
	}
	return Transient
}

// String names the class.
func (c Class) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case Terminal:
		return "terminal"
	case Transient:
		return "transient"
	default:
		return fmt.Sprintf("Class(%d)", int(c))
	}
}

// Kind is the specific cause of a failed request.
type Kind int

const (
	// KindSignature is HTTP 400 (or 401) "API SIGNATURE ERROR": the token pair does not match, the public
	// token is unknown (both happen for a while when the pair is rotated), or something between
	// the client and the appliance altered the request. Transient.
	KindSignature Kind = iota + 1
	// KindDate is HTTP 400 (or 401) "API DATE ERROR": the host clock is more than 30 minutes from
	// the appliance's (compare the host clock with the appliance's Date header). Transient.
	KindDate
	// KindAuth is HTTP 401 without either of those error values.
	KindAuth
	// KindPermission means the token lacks the permission for the endpoint: HTTP 403, a redirect
	// to /403 (or anywhere but /login), or an HTML page (the login page) instead of JSON.
	KindPermission
	// KindUnknownEndpoint is a redirect to the login page (/login): the appliance does not know
	// the endpoint, or its authentication is restarting and sends every request to the login
	// page for a while. Transient.
	KindUnknownEndpoint
	// KindInput is HTTP 400 "INPUT ERROR": the appliance rejected the request's parameters.
	KindInput
	// KindClient is any other 4xx status.
	KindClient
	// KindRateLimited is HTTP 429.
	KindRateLimited
	// KindServer is a 5xx status (or 408).
	KindServer
	// KindTimeout means the appliance made no progress (no headers, or no body bytes) for the
	// client's Timeout.
	KindTimeout
	// KindNetwork is a connection failure: refused, reset, closed early, TLS or proxy errors.
	KindNetwork
	// KindMalformed is a truncated or non-JSON body on a 200 response.
	KindMalformed
	// KindTLS means the appliance's certificate failed verification; it repeats until the CA
	// file (or the certificate) is fixed.
	KindTLS
	// KindCanceled means the caller's context ended before the request completed. It is
	// Retryable: the request itself did not fail, so the work must not be recorded as failed.
	KindCanceled
	// KindMaintenance is a 5xx answered with an HTML page announcing maintenance (or an
	// upgrade) instead of JSON: the appliance, or its proxy, is being upgraded or restarted.
	// Transient. Other 5xx answers, HTML or not, are KindServer.
	KindMaintenance
)

var kindNames = map[Kind]string{
	KindSignature:       "signature",
	KindDate:            "date",
	KindAuth:            "auth",
	KindPermission:      "permission",
	KindUnknownEndpoint: "unknown_endpoint",
	KindInput:           "input",
	KindClient:          "client",
	KindRateLimited:     "rate_limited",
	KindServer:          "server",
	KindTimeout:         "timeout",
	KindNetwork:         "network",
	KindMalformed:       "malformed",
	KindTLS:             "tls",
	KindCanceled:        "canceled",
	KindMaintenance:     "maintenance",
}

// String names the kind in snake case, suitable for a metric label.
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// class is the Class every request failing with this Kind has.
func (k Kind) class() Class {
	switch k {
	case KindRateLimited, KindServer, KindTimeout, KindNetwork, KindMalformed, KindCanceled:
		return Retryable
	case KindSignature, KindDate, KindUnknownEndpoint, KindMaintenance:
		return Transient
	default:
		return Terminal
	}
}

// httpStatusKind reports whether the kind comes from an HTTP status (PullError 300).
func (k Kind) httpStatusKind() bool {
	switch k {
	case KindSignature, KindDate, KindAuth, KindPermission, KindUnknownEndpoint, KindInput,
		KindClient, KindRateLimited, KindServer, KindMaintenance:
		return true
	default:
		return false
	}
}

// Error is a classified failure of one request to the appliance. It never contains the private
// token, the signature or any other signed header.
type Error struct {
	// Class says whether repeating the request may help.
	Class Class
	// Status is the HTTP status code, or 0 when no response was received.
	Status int
	// Endpoint is the request path, without its query.
	Endpoint string
	// Kind is the specific cause.
	Kind Kind
	// RetryAfter is the delay the appliance asked for (Retry-After), or 0.
	RetryAfter time.Duration

	msg string
	err error
}

// newError builds an Error whose Class follows from kind.
func newError(kind Kind, endpoint string, status int, msg string, err error) *Error {
	return &Error{Class: kind.class(), Status: status, Endpoint: endpoint, Kind: kind, msg: msg, err: err}
}

// PullErrorID returns the seed's PullError ID for the failure: 300 for HTTP status errors, 301
// for the others.
func (e *Error) PullErrorID() int {
	if e.Kind.httpStatusKind() {
		return PullErrorHTTP
	}
	return PullErrorOther
}

// Error formats the failure with its PullError ID and message, the endpoint and the cause, e.g.
// "PullError(300): HTTP Error occurred while retrieving events from Darktrace server:
// /modelbreaches: HTTP 503 Service Unavailable".
func (e *Error) Error() string {
	var b strings.Builder
	id := e.PullErrorID()
	msg := PullErrorOtherMessage
	if id == PullErrorHTTP {
		msg = PullErrorHTTPMessage
	}
	fmt.Fprintf(&b, "PullError(%d): %s: %s: %s", id, strings.TrimSuffix(msg, "."), e.Endpoint, e.msg)
	if e.err != nil {
		b.WriteString(": ")
		b.WriteString(e.err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error (a context error, a network error, jsonscan.ErrMalformed),
// if any.
func (e *Error) Unwrap() error { return e.err }

// IsRetryable reports whether a later attempt of the same request may succeed: a *Error of
// Class Retryable or Transient anywhere in its chain. A caller that retries Transient failures
// bounds them with ClassAfter. Errors that are not a *Error (for example one returned by the
// caller's callback) are not retryable.
func IsRetryable(err error) bool {
	c := ClassOf(err)
	return c == Retryable || c == Transient
}

// RetryAfter returns the delay the appliance asked for before the next attempt (its Retry-After
// header on a 429 or 5xx), or 0.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// KindOf returns the Kind of the *Error in err's chain, or 0 when there is none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// PullErrorID returns the seed's PullError ID for err: 300 for an HTTP status error, 301 for
// any other non-nil error, 0 for nil.
func PullErrorID(err error) int {
	if err == nil {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		return e.PullErrorID()
	}
	return PullErrorOther
}

// PullErrorMessage returns the seed's message for err's PullError ID, for log lines.
func PullErrorMessage(err error) string {
	if PullErrorID(err) == PullErrorHTTP {
		return PullErrorHTTPMessage
	}
	return PullErrorOtherMessage
}

// explain completes the classification of a non-200 answer with what only the whole response
// shows: a 5xx HTML page announcing maintenance is KindMaintenance; a date error names the host's
// and the appliance's clocks (its Date header) and their difference; a signature error and a
// redirect to the login page say what to check. hostNow is the client's clock.
func explain(e *Error, resp *http.Response, body []byte, hostNow time.Time) *Error {
	switch e.Kind {
	case KindServer:
		if e.Status >= 500 && isMaintenancePage(resp.Header.Get("Content-Type"), body) {
			e.Kind, e.Class = KindMaintenance, KindMaintenance.class()
			e.msg = fmt.Sprintf("HTTP %d with an HTML maintenance page instead of JSON: the appliance (or a proxy in front of it) is being upgraded or restarted; "+
				"if it persists, check the appliance and that the instance URL points at its API", e.Status)
		}
	case KindDate:
		host := hostNow.UTC()
		if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			skew := host.Sub(d).Round(time.Second)
			rel := "ahead of"
			if skew < 0 {
				skew, rel = -skew, "behind"
			}
			e.msg += fmt.Sprintf("; the host clock reads %s, the appliance's Date header %s: the host is %v %s the appliance; check the host's time synchronisation (NTP)",
				host.Format(time.RFC3339), d.UTC().Format(time.RFC3339), skew, rel)
		} else {
			e.msg += fmt.Sprintf("; the host clock reads %s and the appliance sent no Date header: compare it with the appliance's time and check the host's time synchronisation (NTP)",
				host.Format(time.RFC3339))
		}
	case KindSignature:
		e.msg += "; check that public_token and private_token are the current pair of the same API token (a rotated pair fails like this until the configuration has the new one)"
	case KindUnknownEndpoint:
		e.msg += "; an appliance whose authentication is restarting also redirects to its login page for a while"
	}
	return e
}

// maintenanceWords mark an HTML error page as a maintenance page (lower case).
var maintenanceWords = [][]byte{[]byte("maintenance"), []byte("upgrad"), []byte("being updated")}

// isMaintenancePage reports whether an error body is an HTML page (by its content type or its
// first non-blank byte) that announces maintenance. A gateway's bare "502 Bad Gateway" page is
// not one: it stays KindServer, retried without bound.
func isMaintenancePage(contentType string, body []byte) bool {
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), " \t\r\n")
	if !strings.Contains(strings.ToLower(contentType), "html") && (len(trimmed) == 0 || trimmed[0] != '<') {
		return false
	}
	lower := bytes.ToLower(body)
	for _, w := range maintenanceWords {
		if bytes.Contains(lower, w) {
			return true
		}
	}
	return false
}
