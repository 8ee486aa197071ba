package darktrace

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

// isHTML reports whether a 200 response is an HTML page rather than JSON, by its content type
// or its first non-blank byte.
func isHTML(contentType string, br *bufio.Reader) bool {
	if strings.Contains(strings.ToLower(contentType), "html") {
		return true
	}
	head, _ := br.Peek(512)
	head = bytes.TrimPrefix(head, []byte("\xef\xbb\xbf"))
	head = bytes.TrimLeft(head, " \t\r\n")
	return len(head) > 0 && head[0] == '<'
}

// transportError classifies a failure to get a response.
func (c *Client) transportError(parent, ctx context.Context, endpoint string, err error) *Error {
	if context.Cause(ctx) == errStalled {
		return newError(KindTimeout, endpoint, 0, fmt.Sprintf("no response within %v", c.timeout), nil)
	}
	if parent.Err() != nil {
		return newError(KindCanceled, endpoint, 0, "request canceled", parent.Err())
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // drop "Get <url>:", the request line is noise here
	}
	if isCertError(err) {
		return newError(KindTLS, endpoint, 0,
			"the appliance's TLS certificate is not trusted (set tls.ca_file to its CA, or tls.insecure_skip_verify)", err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return newError(KindTimeout, endpoint, 0, "request timed out", err)
	}
	return newError(KindNetwork, endpoint, 0, "request failed", err)
}

// isCertError reports whether err is a certificate verification failure.
func isCertError(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
	)
	return errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne) || errors.As(err, &cie)
}

// readError classifies a failure while reading or splitting a response body.
func (c *Client) readError(parent, ctx context.Context, endpoint string, err error) *Error {
	switch {
	case context.Cause(ctx) == errStalled:
		return newError(KindTimeout, endpoint, http.StatusOK, fmt.Sprintf("response body stalled for %v", c.timeout), nil)
	case parent.Err() != nil:
		return newError(KindCanceled, endpoint, http.StatusOK, "request canceled while reading the response", parent.Err())
	case errors.Is(err, jsonscan.ErrMalformed):
		return newError(KindMalformed, endpoint, http.StatusOK, "reading the response", err)
	default:
		return newError(KindNetwork, endpoint, http.StatusOK, "reading the response", err)
	}
}

// statusError classifies a response whose status is not 200.
func (c *Client) statusError(resp *http.Response, body []byte, endpoint string) *Error {
	code := resp.StatusCode
	status := fmt.Sprintf("HTTP %d", code)
	if t := http.StatusText(code); t != "" {
		status += " " + t
	}
	switch {
	case code >= 300 && code < 400:
		loc := resp.Header.Get("Location")
		target := loc
		if u, err := url.Parse(loc); err == nil {
			target = u.Path
		}
		if strings.HasSuffix(strings.TrimSuffix(target, "/"), "/login") || bytes.Contains(body, []byte("Redirecting to /login")) {
			return newError(KindUnknownEndpoint, endpoint, code,
				fmt.Sprintf("%s redirect to %s: the appliance does not know the endpoint %s", status, sanitize(loc), endpoint), nil)
		}
		return newError(KindPermission, endpoint, code,
			fmt.Sprintf("%s redirect to %s: the token lacks permission for %s", status, sanitize(loc), endpoint), nil)
	case code == http.StatusBadRequest || code == http.StatusUnauthorized:
		// The error is the value of a single-key object under a key that varies; it is matched
		// by value, and as text in a body of another form, on 400 and on 401 alike.
		v := errorValues(body)
		has := func(s string) bool { return v[s] || bytes.Contains(bytes.ToUpper(body), []byte(s)) }
		switch {
		case has("API SIGNATURE ERROR"):
			return newError(KindSignature, endpoint, code, status+
				" API SIGNATURE ERROR: the appliance refused the request signature; the public and private tokens do not match (or the public token is unknown), or a proxy altered the request", nil)
		case has("API DATE ERROR"):
			return newError(KindDate, endpoint, code, status+
				" API DATE ERROR: the appliance refused the request date; the host clock must be within 30 minutes of the appliance's", nil)
		case code == http.StatusUnauthorized:
			return newError(KindAuth, endpoint, code, status+": authentication failed; check the public and private tokens and the host clock"+bodySnippet(body), nil)
		case has("INPUT ERROR"):
			return newError(KindInput, endpoint, code, status+" INPUT ERROR: the appliance rejected the request parameters", nil)
		}
		return newError(KindClient, endpoint, code, status+bodySnippet(body), nil)
	case code == http.StatusForbidden:
		return newError(KindPermission, endpoint, code, fmt.Sprintf("%s: the token lacks permission for %s", status, endpoint), nil)
	case code == http.StatusTooManyRequests:
		e := newError(KindRateLimited, endpoint, code, status+": rate limited by the appliance", nil)
		e.RetryAfter = c.retryAfter(resp.Header.Get("Retry-After"))
		if e.RetryAfter > 0 {
			e.msg += fmt.Sprintf(" (retry after %v)", e.RetryAfter)
		}
		return e
	case code == http.StatusRequestTimeout || code >= 500:
		e := newError(KindServer, endpoint, code, status+bodySnippet(body), nil)
		e.RetryAfter = c.retryAfter(resp.Header.Get("Retry-After"))
		return e
	case code >= 400:
		return newError(KindClient, endpoint, code, status+bodySnippet(body), nil)
	default:
		return newError(KindServer, endpoint, code, "unexpected "+status+bodySnippet(body), nil)
	}
}

// retryAfter parses a Retry-After value: delay seconds or an HTTP date. Invalid or past values
// give 0.
func (c *Client) retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(c.now()); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}

// errorValues returns the string values of a JSON object body (Darktrace's error bodies are a
// single-key object whose value is the error, under a key that varies).
func errorValues(body []byte) map[string]bool {
	var obj map[string]any
	if json.Unmarshal(body, &obj) != nil {
		return nil
	}
	vals := make(map[string]bool, len(obj))
	for _, v := range obj {
		if s, ok := v.(string); ok {
			vals[strings.ToUpper(strings.TrimSpace(s))] = true
		}
	}
	return vals
}

// bodySnippet returns ": " and the start of an error body on one printable line, or "".
func bodySnippet(body []byte) string {
	s := sanitize(string(body))
	if s == "" {
		return ""
	}
	return ": " + s
}

// sanitize shortens s to at most 160 characters on one line of printable ASCII.
func sanitize(s string) string {
	const limit = 160
	var b strings.Builder
	space := false
	for _, r := range s {
		if b.Len() >= limit {
			b.WriteString("…")
			break
		}
		switch {
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			space = b.Len() > 0
		case r > ' ' && r < 0x7f:
			if space {
				b.WriteByte(' ')
				space = false
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}
