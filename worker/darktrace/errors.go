package darktrace

import (
	"errors"
	"fmt"
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

// Class says whether a failed request may succeed when repeated.
type Class int

const (
	// Retryable failures are transient: a later attempt of the same request may succeed.
	Retryable Class = iota + 1
	// Terminal failures repeat until someone changes the configuration, the tokens' permissions
	// or the request itself; retrying them only wastes the appliance's rate limit.
	Terminal
)

// String names the class.
func (c Class) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case Terminal:
		return "terminal"
	default:
		return fmt.Sprintf("Class(%d)", int(c))
	}
}

// Kind is the specific cause of a failed request.
type Kind int

const (
	// KindSignature is HTTP 400 (or 401) "API SIGNATURE ERROR": the token pair does not match, the public
	// token is unknown, or something between the client and the appliance altered the request.
	KindSignature Kind = iota + 1
	// KindDate is HTTP 400 (or 401) "API DATE ERROR": the host clock is too far from the appliance's.
	KindDate
	// KindAuth is HTTP 401 without either of those error values.
	KindAuth
	// KindPermission means the token lacks the permission for the endpoint: HTTP 403, a redirect
	// to /403 (or anywhere but /login), or an HTML page (the login page) instead of JSON.
	KindPermission
	// KindUnknownEndpoint is a redirect to /login: the appliance does not know the endpoint.
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
	default:
		return Terminal
	}
}

// httpStatusKind reports whether the kind comes from an HTTP status (PullError 300).
func (k Kind) httpStatusKind() bool {
	switch k {
	case KindSignature, KindDate, KindAuth, KindPermission, KindUnknownEndpoint, KindInput,
		KindClient, KindRateLimited, KindServer:
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

// Unwrap returns the underlying error (a context error, a network error, events.ErrMalformed),
// if any.
func (e *Error) Unwrap() error { return e.err }

// IsRetryable reports whether err is a transient failure, one that a later attempt of the same
// request may not meet again: a *Error of Class Retryable anywhere in its chain. Errors that are not a *Error (for
// example one returned by the caller's callback) are not retryable.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Class == Retryable
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
