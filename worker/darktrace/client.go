// Package darktrace is dtfleet's client for the Darktrace Threat Visualizer REST API: it signs
// every request (DTAPI-Token, DTAPI-Date, DTAPI-Signature), builds each service's query, streams
// response bodies into events without holding whole responses, and classifies every failure as
// Retryable or Terminal with the Devo collector's PullError IDs. The private token is used for
// signing only and never appears in an error, a log line or a header other than the signature.
//
// The package owns the appliance's wire contract: requests, signatures, which JSON shape each
// endpoint answers with (ShapeFor), failure classification, and the backoff between attempts. It
// may import internal/config and internal/jsonscan (which splits the bodies), and no other package
// of dtfleet; what the events mean belongs to worker/events.
package darktrace

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

// DefaultTimeout is the Timeout of a Config that leaves it zero.
const DefaultTimeout = 60 * time.Second

// ErrInvalidConfig is wrapped by New's errors.
var ErrInvalidConfig = errors.New("invalid Darktrace client configuration")

// ErrInvalidRequest is wrapped by the errors of a Request that cannot be sent: an unknown
// service, a bad endpoint, or a windowed service without a window.
var ErrInvalidRequest = errors.New("invalid Darktrace request")

// Config configures a Client.
type Config struct {
	// BaseURL is the appliance's address, e.g. https://euw1-1234-01.cloud.darktrace.com; a
	// missing scheme means https. A path in it prefixes every endpoint and is signed with it.
	BaseURL string
	// PublicToken is sent as DTAPI-Token.
	PublicToken string
	// PrivateToken keys the signature; it is never sent or printed.
	PrivateToken config.Secret
	// CAFile, when set, is a PEM file holding the only CAs trusted for the appliance's
	// certificate; otherwise the system roots are trusted.
	CAFile string
	// CertFile and KeyFile, when both set, are a PEM client certificate and its key presented
	// to the appliance (for appliances or proxies in front of them that require mutual TLS).
	CertFile, KeyFile string
	// InsecureSkipVerify disables certificate verification (logged as a warning by New).
	InsecureSkipVerify bool
	// Timeout bounds how long a request may make no progress: until the response headers
	// arrive, and between two reads of the body. A large body that keeps streaming is never cut
	// off. Zero means DefaultTimeout.
	Timeout time.Duration
	// Proxy selects the proxy for each request; nil means http.ProxyFromEnvironment (HTTPS_PROXY,
	// HTTP_PROXY, NO_PROXY).
	Proxy func(*http.Request) (*url.URL, error)
	// Limiter is waited on before every request; nil means unlimited.
	Limiter Limiter
	// Logger receives the client's log lines; nil discards them.
	Logger *slog.Logger
	// Now is the clock used for DTAPI-Date and Retry-After dates; nil means time.Now.
	Now func() time.Time
	// Metrics, when set, observes every request under the label Input (the input's name).
	Metrics *Metrics
	Input   string
}

// ConfigFromInput returns the Config for one configured appliance: its base URL, tokens and TLS
// settings, with a local limiter at the input's requests_per_second. Callers set Logger, and
// replace Limiter with a fleet-wide one when several processes share the appliance.
func ConfigFromInput(in config.Input) Config {
	return Config{
		BaseURL:            in.Credentials.Instance,
		PublicToken:        in.Credentials.PublicToken,
		PrivateToken:       in.Credentials.PrivateToken,
		CAFile:             in.TLS.CAFile,
		CertFile:           in.TLS.CertFile,
		KeyFile:            in.TLS.KeyFile,
		InsecureSkipVerify: in.TLS.InsecureSkipVerify,
		Limiter:            NewLocalLimiter(in.RequestsPerSecond),
	}
}

// Client calls one Darktrace appliance. It is safe for concurrent use; its transport keeps up to
// 64 idle connections to the appliance so that many requests can be in flight.
type Client struct {
	base      *url.URL
	public    string
	private   config.Secret
	hc        *http.Client
	transport *http.Transport
	timeout   time.Duration
	limiter   Limiter
	logger    *slog.Logger
	now       func() time.Time
	metrics   *Metrics
	input     string
}

// New validates cfg and returns a Client. It reads CAFile and the client certificate, if set, and logs a warning when
// certificate verification is disabled. It does no network I/O.
func New(cfg Config) (*Client, error) {
	raw := strings.TrimSpace(cfg.BaseURL)
	if raw == "" {
		return nil, fmt.Errorf("%w: base URL is empty", ErrInvalidConfig)
	}
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	base, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: parsing base URL: %w", ErrInvalidConfig, err)
	}
	if base.Scheme != "https" && base.Scheme != "http" {
		return nil, fmt.Errorf("%w: base URL scheme must be https or http, not %q", ErrInvalidConfig, base.Scheme)
	}
	if base.Host == "" {
		return nil, fmt.Errorf("%w: base URL %q has no host", ErrInvalidConfig, cfg.BaseURL)
	}
	if base.User != nil || base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("%w: base URL must be scheme://host[:port][/path] without credentials, query or fragment", ErrInvalidConfig)
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	base.RawPath = ""
	if cfg.PublicToken == "" {
		return nil, fmt.Errorf("%w: public token is empty", ErrInvalidConfig)
	}
	if cfg.PrivateToken == "" {
		return nil, fmt.Errorf("%w: private token is empty", ErrInvalidConfig)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: timeout %v is negative", ErrInvalidConfig, cfg.Timeout)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: reading CA file: %w", ErrInvalidConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrInvalidConfig, cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	switch {
	case (cfg.CertFile == "") != (cfg.KeyFile == ""):
		return nil, fmt.Errorf("%w: a client certificate needs both a certificate file and a key file", ErrInvalidConfig)
	case cfg.CertFile != "":
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: loading the client certificate %s: %w", ErrInvalidConfig, cfg.CertFile, err)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	if cfg.InsecureSkipVerify {
		tlsCfg.InsecureSkipVerify = true
		logger.Warn("TLS certificate verification of the Darktrace appliance is disabled (insecure_skip_verify); the connection can be intercepted",
			"host", base.Host)
	}
	proxy := cfg.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	tr := &http.Transport{
		Proxy:                 proxy,
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   15 * time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
	limiter := cfg.Limiter
	if limiter == nil {
		limiter = unlimited{}
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Client{
		base:      base,
		public:    cfg.PublicToken,
		private:   cfg.PrivateToken,
		transport: tr,
		hc: &http.Client{
			Transport: tr,
			// Redirects are answers to classify (a 302 to /403 or /login), never to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		timeout: cmp.Or(cfg.Timeout, DefaultTimeout),
		limiter: limiter,
		logger:  logger,
		now:     now,
		metrics: cfg.Metrics,
		input:   cfg.Input,
	}, nil
}

// Close releases the client's idle connections. The client remains usable.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

// Request is one call to a service's endpoint.
type Request struct {
	// Service is a config.Service* name; it decides the query and the response's shape.
	Service string
	// Endpoint is the path, e.g. /modelbreaches; empty means the service's default.
	Endpoint string
	// Start and End are the slot [Start, End) of a windowed service; zero for snapshots.
	Start, End time.Time
	// LookBack moves a windowed service's starttime back (its overlap with the slots before):
	// what became visible after an earlier slot was fetched is caught again, and deduplicated
	// by its key downstream.
	LookBack time.Duration
	// View asks antigena for its no-window view (includecleared=true&includehistory=true: the
	// current actions and those of the last 14 days, each in its current state) instead of a
	// window on start; Start and End are then not sent (the caller filters by state time).
	View bool
}

// defaultEndpoints maps each service to its endpoint.
var defaultEndpoints = map[string]string{
	config.ServiceAntigena:       "/antigena",
	config.ServiceIncidentEvents: "/aianalyst/incidentevents",
	config.ServiceSummary:        "/summarystatistics",
	config.ServiceStatus:         "/status",
	config.ServiceModelBreaches:  "/modelbreaches",
}

// PathAndQuery returns the request's path and the exact query string that is signed and sent:
//
//	modelbreaches            starttime=<Start-LookBack ms>&endtime=<End ms>&creationtime=true&includeacknowledged=true
//	aianalyst_incidentevents starttime=<Start-LookBack ms>&endtime=<End ms>&includeacknowledged=true&includeallpinned=false
//	antigena                 starttime=<Start-LookBack ms>&endtime=<End ms>&includecleared=true
//	antigena (View)          includecleared=true&includehistory=true
//	status                   fast=true&includechildren=true
//	summarystatistics        (no query)
//
// Times are epoch milliseconds. endtime is End itself: the appliance may treat endtime as
// inclusive, so an event exactly at End may come back in two adjacent slots (dtfleet
// de-duplicates by key); sending End-1ms instead would lose it where endtime is exclusive.
// Values are only digits and true/false, so the signed and sent forms cannot differ.
func (r Request) PathAndQuery() (path, query string, err error) {
	path = r.Endpoint
	def, known := defaultEndpoints[r.Service]
	if !known {
		return "", "", fmt.Errorf("%w: unknown service %q", ErrInvalidRequest, r.Service)
	}
	if path == "" {
		path = def
	}
	if err := checkPath(path); err != nil {
		return "", "", err
	}
	window := func(start time.Time) (string, error) {
		if r.Start.IsZero() || r.End.IsZero() {
			return "", fmt.Errorf("%w: %s needs a window (Start and End)", ErrInvalidRequest, r.Service)
		}
		if r.End.Before(r.Start) {
			return "", fmt.Errorf("%w: %s window ends (%s) before it starts (%s)", ErrInvalidRequest, r.Service,
				r.End.UTC().Format(time.RFC3339), r.Start.UTC().Format(time.RFC3339))
		}
		return "starttime=" + strconv.FormatInt(start.UnixMilli(), 10) +
			"&endtime=" + strconv.FormatInt(r.End.UnixMilli(), 10), nil
	}
	switch r.Service {
	case config.ServiceModelBreaches:
		if r.LookBack < 0 {
			return "", "", fmt.Errorf("%w: negative look-back %v", ErrInvalidRequest, r.LookBack)
		}
		w, err := window(r.Start.Add(-r.LookBack))
		if err != nil {
			return "", "", err
		}
		// creationtime=true: the window filters on creationTime, not time. Every breach is created
		// once, at or after its time, so windows on creationTime are complete once the appliance
		// clock passed them, however late a breach is created.
		return path, w + "&creationtime=true&includeacknowledged=true", nil
	case config.ServiceIncidentEvents:
		if r.LookBack < 0 {
			return "", "", fmt.Errorf("%w: negative look-back %v", ErrInvalidRequest, r.LookBack)
		}
		w, err := window(r.Start.Add(-r.LookBack))
		if err != nil {
			return "", "", err
		}
		return path, w + "&includeacknowledged=true&includeallpinned=false", nil
	case config.ServiceAntigena:
		if r.View {
			return path, "includecleared=true&includehistory=true", nil
		}
		if r.LookBack < 0 {
			return "", "", fmt.Errorf("%w: negative look-back %v", ErrInvalidRequest, r.LookBack)
		}
		w, err := window(r.Start.Add(-r.LookBack))
		if err != nil {
			return "", "", err
		}
		return path, w + "&includecleared=true", nil
	case config.ServiceStatus:
		// fast=true skips the slow subnet connectivity check (subnetData); includechildren=true
		// (the default, sent explicitly) keeps probes and Unified View instances.
		return path, "fast=true&includechildren=true", nil
	default: // summarystatistics
		return path, "", nil
	}
}

// checkPath accepts only an absolute path of unreserved characters, so that the signed path is
// the one on the wire.
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%w: endpoint %q must start with /", ErrInvalidRequest, p)
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', strings.ContainsRune("/-._~", r):
		default:
			return fmt.Errorf("%w: endpoint %q has a character other than letters, digits and /-._~", ErrInvalidRequest, p)
		}
	}
	return nil
}

// Stats describe one fetch.
type Stats struct {
	// Events is the number of events passed to the callback.
	Events int
	// Bytes is the number of body bytes read (after any transfer decompression).
	Bytes int64
	// Duration is the wall time of the fetch, from the limiter wait to the end of the body.
	Duration time.Duration
	// ClockOffset is the appliance's clock minus the host's, from the response's Date header
	// (to the second); Dated says whether the response had one.
	ClockOffset time.Duration
	Dated       bool
}

// Fetch sends req and streams the response body's events to fn, one compact JSON value at a
// time and in response order (raw is valid only during the call); memory follows the largest
// event, not the response. Failures are *Error values classified Retryable or Terminal, except
// an error returned by fn, which stops the fetch and is returned wrapped but unclassified, and
// ErrInvalidRequest. Because events stream, fn may have seen some events of a fetch that then
// fails: a caller must discard a failed fetch's events.
func (c *Client) Fetch(ctx context.Context, req Request, fn func(raw []byte) error) (Stats, error) {
	t0 := time.Now()
	var st Stats
	path, query, err := req.PathAndQuery()
	if err != nil {
		return st, fmt.Errorf("fetching %s: %w", req.Service, err)
	}
	shape := ShapeFor(req.Service)
	var fnErr error
	err = c.do(ctx, path, query, &st.Bytes, &st, func(body io.Reader) error {
		return jsonscan.Split(body, shape, func(raw []byte) error {
			if err := fn(raw); err != nil {
				fnErr = err
				return err
			}
			st.Events++
			return nil
		})
	}, func(err error) bool { return fnErr != nil && errors.Is(err, fnErr) })
	st.Duration = time.Since(t0)
	if err != nil {
		return st, err
	}
	c.logger.Debug("fetched events from Darktrace", "service", req.Service, "endpoint", path,
		"events", st.Events, "bytes", st.Bytes, "duration", st.Duration)
	return st, nil
}

// Check validates the tokens with a cheap signed request (GET
// /summarystatistics?responsedata=subnets, the smallest answer of an endpoint every collecting
// token needs) and logs "Tokens have been validated successfully." when the appliance accepts it.
func (c *Client) Check(ctx context.Context) error {
	const path, query = "/summarystatistics", "responsedata=subnets"
	var n int64
	err := c.do(ctx, path, query, &n, nil, func(body io.Reader) error {
		return jsonscan.Split(body, jsonscan.ShapeObject, func([]byte) error { return nil })
	}, nil)
	if err != nil {
		return fmt.Errorf("validating tokens: %w", err)
	}
	c.logger.Info("Tokens have been validated successfully.", "host", c.base.Host)
	return nil
}

// CheckWith validates the tokens with req, a request of a service the caller runs anyway (see
// CheckRequest), reading and discarding its answer, and logs "Tokens have been validated
// successfully." when the appliance accepts it.
func (c *Client) CheckWith(ctx context.Context, req Request) error {
	if _, err := c.Fetch(ctx, req, func([]byte) error { return nil }); err != nil {
		return fmt.Errorf("validating tokens with %s: %w", req.Service, err)
	}
	c.logger.Info("Tokens have been validated successfully.", "host", c.base.Host, "service", req.Service)
	return nil
}

// CheckRequest returns the cheapest request of a service that in runs, for a token check that
// needs no permission beyond the services' own: status, else summarystatistics, else a window of
// the last minute (at now) of a windowed service. ok is false when in runs no service.
func CheckRequest(in config.Input, now time.Time) (req Request, ok bool) {
	enabled := in.EnabledServices()
	for _, name := range []string{config.ServiceStatus, config.ServiceSummary, config.ServiceIncidentEvents, config.ServiceAntigena, config.ServiceModelBreaches} {
		if !slices.Contains(enabled, name) {
			continue
		}
		svc := in.Services[name]
		req = Request{Service: name, Endpoint: svc.Endpoint}
		if !svc.Snapshot {
			req.End = now.UTC().Truncate(time.Second)
			req.Start = req.End.Add(-time.Minute)
		}
		return req, true
	}
	return Request{}, false
}

// errStalled is the cancellation cause when the appliance made no progress for the timeout.
var errStalled = errors.New("stalled")

// maxErrorBody bounds how much of an error response is read for classification.
const maxErrorBody = 64 << 10

// do sends one signed GET of path?query, counts body bytes into n and hands a 200 JSON body to
// consume. isCallerErr recognises errors that come from the caller's callback, which are
// returned wrapped but unclassified.
func (c *Client) do(ctx context.Context, path, query string, n *int64, st *Stats, consume func(io.Reader) error, isCallerErr func(error) bool) (reqErr error) {
	endpoint := path
	if err := c.limiter.Wait(ctx); err != nil {
		return newError(KindCanceled, endpoint, 0, "waiting for the rate limiter", err)
	}
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(c.timeout, func() { cancel(errStalled) })
	defer stall.Stop()

	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = query
	apiRequest := u.EscapedPath()
	if query != "" {
		apiRequest += "?" + query
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("%w: building request for %s: %w", ErrInvalidRequest, endpoint, err)
	}
	hreq.URL.RawQuery = query // sent byte for byte as signed
	date := c.now().UTC().Format(DateLayout)
	hreq.Header.Set("DTAPI-Token", c.public)
	hreq.Header.Set("DTAPI-Date", date)
	hreq.Header.Set("DTAPI-Signature", Sign(c.private.Reveal(), c.public, apiRequest, date))
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", "dtfleet")

	start := c.now()
	resp, err := c.hc.Do(hreq)
	defer func() { c.metrics.observe(c.input, endpoint, resp, reqErr, c.now().Sub(start), c.now()) }()
	if err != nil {
		return c.transportError(parent, ctx, endpoint, err)
	}
	defer resp.Body.Close()
	if st != nil {
		if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			// The Date header has whole seconds: round the host's clock the same way.
			st.ClockOffset, st.Dated = d.Sub(c.now().Truncate(time.Second)), true
		}
	}
	body := &progressReader{r: resp.Body, stall: stall, timeout: c.timeout, n: n}
	if resp.StatusCode != http.StatusOK {
		b, rerr := io.ReadAll(io.LimitReader(body, maxErrorBody))
		if rerr != nil && resp.StatusCode < 300 {
			return c.readError(parent, ctx, endpoint, rerr)
		}
		return explain(c.statusError(resp, b, endpoint), resp, b, c.now())
	}
	br := bufio.NewReaderSize(body, 4096)
	if isHTML(resp.Header.Get("Content-Type"), br) {
		return newError(KindPermission, endpoint, resp.StatusCode,
			fmt.Sprintf("HTTP 200 with an HTML page (a login page) instead of JSON: the token lacks permission for %s", endpoint), nil)
	}
	if err := consume(br); err != nil {
		if isCallerErr != nil && isCallerErr(err) {
			return fmt.Errorf("handling an event of %s: %w", endpoint, err)
		}
		return c.readError(parent, ctx, endpoint, err)
	}
	return nil
}

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

// progressReader counts body bytes and pushes the stall deadline back on every read that
// returns data.
type progressReader struct {
	r       io.Reader
	stall   *time.Timer
	timeout time.Duration
	n       *int64
}

// Read reads from the body, counting bytes and resetting the stall timer on progress.
func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		*p.n += int64(n)
		p.stall.Reset(p.timeout)
	}
	return n, err
}
