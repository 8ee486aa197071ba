package devo

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// ErrHTTPStatus is wrapped when Devo's HTTP endpoint answers with a status other than 2xx.
var ErrHTTPStatus = errors.New("unexpected HTTP status")

const (
	// httpRequestPayload is the uncompressed payload after which a stream request is sent and a
	// new one started; Devo accepts at most 32 MB per request.
	httpRequestPayload = 4 << 20
	// httpRequestTimeoutFactor bounds a whole request (upload included) at this many Timeouts.
	httpRequestTimeoutFactor = 4
)

// httpSender posts batches to Devo's HTTP ingestion endpoint in stream mode: one event per line in
// a gzip body, at most httpRequestPayload uncompressed bytes per request.
type httpSender struct {
	client     *http.Client
	endpoint   string // <url>/stream/<domain>/token!<token>/<host>/ (token included: never print)
	redacted   string // endpoint with the token replaced
	token      string
	timeout    time.Duration
	maxPayload int
	logger     *slog.Logger

	raw  bytes.Buffer // uncompressed payload of the request being built
	body bytes.Buffer // its gzip encoding
	gz   *gzip.Writer
}

func newHTTPSender(c config.OutputConfig, host string, opts Options, logger *slog.Logger) (*httpSender, error) {
	base := c.URL
	if base == "" {
		return nil, fmt.Errorf("%w: url is required for an http output (config.Load sets it from address)", ErrBadConfig)
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: url %q is not an http(s) URL", ErrBadConfig, base)
	}
	if c.Domain == "" {
		return nil, fmt.Errorf("%w: domain is required for an http output", ErrBadConfig)
	}
	if c.Token == "" {
		return nil, fmt.Errorf("%w: token is required for an http output", ErrBadConfig)
	}
	prefix := strings.TrimRight(u.String(), "/") + "/stream/" + url.PathEscape(c.Domain) + "/token!"
	token := c.Token.Reveal()
	suffix := "/" + url.PathEscape(host) + "/"
	nd := &net.Dialer{Timeout: opts.Timeout, KeepAlive: 15 * time.Second}
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           nd.DialContext,
		TLSHandshakeTimeout:   opts.Timeout,
		ResponseHeaderTimeout: opts.Timeout,
		IdleConnTimeout:       25 * time.Second,
		MaxIdleConnsPerHost:   2,
		ForceAttemptHTTP2:     true,
	}
	s := &httpSender{
		client: &http.Client{
			Transport: transport,
			// A redirect would carry the token elsewhere; a 3xx is an error like any non-2xx.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		endpoint:   prefix + url.PathEscape(token) + suffix,
		redacted:   prefix + "REDACTED" + suffix,
		token:      c.Token.Reveal(),
		timeout:    opts.Timeout,
		maxPayload: httpRequestPayload,
		logger:     logger,
	}
	s.gz, _ = gzip.NewWriterLevel(nil, gzipLevel) // the level is a valid constant
	logger.Debug("http output ready", "endpoint", s.redacted)
	return s, nil
}

func (s *httpSender) send(ctx context.Context, b *Batch) error {
	target := s.endpoint + url.PathEscape(b.Tag)
	shown := s.redacted + url.PathEscape(b.Tag)
	s.raw.Reset()
	events := 0
	for i := range b.Events {
		ev := &b.Events[i]
		s.raw.Write(appendMessage(s.raw.AvailableBuffer(), ev.Msg))
		s.raw.WriteByte('\n')
		events++
		if s.raw.Len() >= s.maxPayload || i == len(b.Events)-1 {
			if err := s.post(ctx, target, shown, events); err != nil {
				return err
			}
			s.raw.Reset()
			events = 0
		}
	}
	if s.raw.Cap() > 2*s.maxPayload {
		s.raw = bytes.Buffer{}
		s.body = bytes.Buffer{}
	}
	return nil
}

// post sends the payload in s.raw, gzip-encoded, and accepts only a 2xx.
func (s *httpSender) post(ctx context.Context, target, shown string, events int) error {
	s.body.Reset()
	s.gz.Reset(&s.body)
	if _, err := s.gz.Write(s.raw.Bytes()); err != nil {
		return fmt.Errorf("compressing the request body: %w", err)
	}
	if err := s.gz.Close(); err != nil {
		return fmt.Errorf("compressing the request body: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, httpRequestTimeoutFactor*s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, target, bytes.NewReader(s.body.Bytes()))
	if err != nil {
		return fmt.Errorf("building the request to %s: %w", shown, s.redact(err))
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting %d events to %s: %w", events, shown, ctxErr(ctx, s.redact(err)))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		text := strings.ReplaceAll(strings.TrimSpace(string(snippet)), s.token, "REDACTED")
		return fmt.Errorf("posting %d events to %s: %w %d %s: %q", events, shown, ErrHTTPStatus,
			resp.StatusCode, http.StatusText(resp.StatusCode), text)
	}
	return nil
}

// redact strips the request URL (which holds the token) from a client error, and makes sure no
// remaining text holds the token either.
func (s *httpSender) redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if strings.Contains(err.Error(), s.token) || strings.Contains(err.Error(), url.PathEscape(s.token)) {
		msg := strings.ReplaceAll(err.Error(), url.PathEscape(s.token), "REDACTED")
		return errors.New(strings.ReplaceAll(msg, s.token, "REDACTED"))
	}
	return err
}

func (s *httpSender) close() error {
	s.client.CloseIdleConnections()
	return nil
}
