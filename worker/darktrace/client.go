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
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
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
	// Pacer, when set, admits every request before the Limiter's wait and is told how it went:
	// it bounds the requests in flight (nil: no bound beyond the caller's own).
	Pacer Pacer
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
	pacer     Pacer
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
		pacer:   cfg.Pacer,
		logger:  logger,
		now:     now,
		metrics: cfg.Metrics,
		input:   cfg.Input,
	}, nil
}

// Close releases the client's idle connections. The client remains usable.
func (c *Client) Close() { c.transport.CloseIdleConnections() }

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
// event (at most req.MaxEventSize when set), not the response. Failures are *Error values classified Retryable or Terminal, except
// an error returned by fn, which stops the fetch and is returned wrapped but unclassified, and
// ErrInvalidRequest. An event over req.MaxEventSize goes to req.TooLarge instead of fn (Stats.Events
// does not count it). Because events stream, fn may have seen some events of a fetch that then
// fails: a caller must discard a failed fetch's events.
func (c *Client) Fetch(ctx context.Context, req Request, fn func(raw []byte) error) (Stats, error) {
	return c.FetchLookup(ctx, req, nil, func(raw []byte, _ [][]byte) error { return fn(raw) })
}

// FetchLookup is Fetch that also hands fn, with each event, the value tokens of its top-level
// members named names, found in the pass that splits the response (see jsonscan.SplitLookup):
// vals[i] is the token of names[i] in raw, or nil. vals, like raw, is valid only during the call.
func (c *Client) FetchLookup(ctx context.Context, req Request, names []string, fn func(raw []byte, vals [][]byte) error) (Stats, error) {
	t0 := time.Now()
	var st Stats
	path, query, err := req.PathAndQuery()
	if err != nil {
		return st, fmt.Errorf("fetching %s: %w", req.Service, err)
	}
	shape := ShapeFor(req.Service)
	var fnErr error
	// An event over req.MaxEventSize is never held whole: one 2 GB event costs the limit, not
	// 2 GB (issue 9, row 7).
	tooLarge := func(index int, size int64, head []byte) error {
		if req.TooLarge == nil {
			return nil
		}
		if err := req.TooLarge(index, size, head); err != nil {
			fnErr = err
			return err
		}
		return nil
	}
	err = c.do(ctx, path, query, &st.Bytes, &st, func(body io.Reader) error {
		return jsonscan.SplitLookup(body, shape, names, func(raw []byte, vals [][]byte) error {
			if err := fn(raw, vals); err != nil {
				fnErr = err
				return err
			}
			st.Events++
			return nil
		}, jsonscan.MaxValueHead(req.MaxEventSize, TooLargeHead, tooLarge))
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
	var out Outcome
	if c.pacer != nil {
		done, err := c.pacer.Acquire(ctx)
		if err != nil {
			return newError(KindCanceled, endpoint, 0, "waiting for room in flight", err)
		}
		defer func() { done(out) }()
	}
	q0 := time.Now()
	if err := c.limiter.Wait(ctx); err != nil {
		out.Canceled = true
		return newError(KindCanceled, endpoint, 0, "waiting for the rate limiter", err)
	}
	out.Queued = time.Since(q0)
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
	sent := time.Now()
	resp, err := c.hc.Do(hreq)
	out.Latency = time.Since(sent)
	defer func() { c.metrics.observe(c.input, endpoint, resp, reqErr, c.now().Sub(start), c.now()) }()
	if err != nil {
		out.Failed, out.Canceled = true, parent.Err() != nil
		return c.transportError(parent, ctx, endpoint, err)
	}
	out.Status = resp.StatusCode
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
