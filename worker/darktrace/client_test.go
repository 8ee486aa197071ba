package darktrace

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// privateToken is distinctive so that a leak is easy to grep for.
const (
	publicToken  = "pub-0123456789abcdef"
	privateToken = "PRIV-zz9-plural-z-alpha-LEAKCHECK"
)

// fakeNow is the fake appliance's clock: the real clock, so the client's DTAPI-Date (real
// time) is within the allowed skew, truncated so that snapshots are stable within a test.
func fakeNow() func() time.Time {
	now := time.Now().UTC().Truncate(time.Minute)
	return func() time.Time { return now }
}

func fakeOptions() darktracetest.Options {
	now := fakeNow()
	end := now().Truncate(time.Hour).Add(time.Hour)
	return darktracetest.Options{
		PublicToken: publicToken, PrivateToken: privateToken, Seed: 7,
		Start: end.Add(-48 * time.Hour), End: end, Now: now, EventSize: 1500,
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: 30, config.ServiceIncidentEvents: 6, config.ServiceAntigena: 8},
	}
}

// newClient returns a client for srv with the test tokens, logging at debug level into logs.
func newClient(t testing.TB, baseURL string, logs io.Writer, mod func(*Config)) *Client {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	cfg := Config{
		BaseURL: baseURL, PublicToken: publicToken, PrivateToken: privateToken,
		Timeout: 10 * time.Second,
		Logger:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Proxy:   func(*http.Request) (*url.URL, error) { return nil, nil },
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// collect fetches req and returns the events.
func collect(ctx context.Context, c *Client, req Request) ([][]byte, Stats, error) {
	var out [][]byte
	st, err := c.Fetch(ctx, req, func(raw []byte) error {
		out = append(out, slices.Clone(raw))
		return nil
	})
	return out, st, err
}

func TestSignVectors(t *testing.T) {
	t.Parallel()
	// darktrace-api.md §1.4, vectors 1–8.
	const p1, k1 = "7chbwad4hl4n5ok69e2edrs2ogpiqy8ldd5oozdb", "118v8jecrbrtkucou5a34hsbzounohx6jce61dwy"
	tests := []struct{ private, public, apiRequest, date, want string }{
		{p1, k1, "/modelbreaches?starttime=1701388800000&endtime=1704070800000", "20230101T120000", "f19ae16721cc0e020ad12ec372cb15fa93bf3626"},
		{"private", "public", "/query?param=True", "20230628T125331", "77bb1423ac8b591f5cb5fded6d4c6002db824a07"},
		{"aa2b78ea42cc035671754ebf36e54d97715b24a9", "939fe2a517cde7f092cc8bd7c3027a51a061f0b2", "/details?pbid=1000000249489", "2021-01-01T23:00:00Z", "2e3283e367176df6d9bb96fb528e0144dc5f4d1d"},
		{"72aa298719365add6515d1996df88d6967c8e8bc", "556e2f179ed65bdc2022a2b71f118ac061834f4d", "/autocomplete?count=50&query=foobar&spec=8", "2021-01-02T00:08:08Z", "58c129f33288f22d22ba7a687f1884c3c7b44836"},
		{p1, k1, "/modelbreaches?starttime=1701388800000&endtime=1704070800000", "2023-01-01 12:00:00", "60d91c37273dc6ffb5c252caa105b7800dc86db4"},
		{p1, k1, "/status", "20230101T120000", "b240860c99316761ad8344feb36b1129e53518d6"},
		{p1, k1, "/aianalyst/incidentevents?starttime=1701388800000&endtime=1704070800000&includeallpinned=false", "20230101T120000", "ef9c3ba05d27b0d401eba1a25a289a59e19ddef7"},
		{p1, k1, `/modelbreaches/101/comments?{"message":"Test Comment"}`, "20230101T120000", "2b710794c26d7456a3b29e4c80cde0353e7f56bc"},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("vector %d", i+1), func(t *testing.T) {
			t.Parallel()
			if got := Sign(tt.private, tt.public, tt.apiRequest, tt.date); got != tt.want {
				t.Fatalf("Sign = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestPathAndQuery(t *testing.T) {
	t.Parallel()
	start := time.Date(2023, 12, 1, 0, 0, 0, 0, time.UTC)
	end := start.Add(time.Hour)
	tests := []struct {
		name      string
		req       Request
		wantPath  string
		wantQuery string
		wantErr   error
	}{
		{"modelbreaches with look-back", Request{Service: config.ServiceModelBreaches, Start: start, End: end, LookBack: 30 * time.Minute},
			"/modelbreaches", "starttime=1701387000000&endtime=1701392400000&creationtime=true&includeacknowledged=true", nil},
		{"modelbreaches", Request{Service: config.ServiceModelBreaches, Start: start, End: end},
			"/modelbreaches", "starttime=1701388800000&endtime=1701392400000&creationtime=true&includeacknowledged=true", nil},
		{"incident events", Request{Service: config.ServiceIncidentEvents, Start: start, End: end, LookBack: time.Hour},
			"/aianalyst/incidentevents", "starttime=1701385200000&endtime=1701392400000&includeacknowledged=true&includeallpinned=false", nil},
		{"antigena view", Request{Service: config.ServiceAntigena, Start: start, End: end, View: true},
			"/antigena", "includecleared=true&includehistory=true", nil},
		{"antigena", Request{Service: config.ServiceAntigena, Start: start, End: end},
			"/antigena", "starttime=1701388800000&endtime=1701392400000&includecleared=true", nil},
		{"status", Request{Service: config.ServiceStatus}, "/status", "fast=true&includechildren=true", nil},
		{"summary", Request{Service: config.ServiceSummary, Start: start, End: end}, "/summarystatistics", "", nil},
		{"endpoint override", Request{Service: config.ServiceSummary, Endpoint: "/custom/summary"}, "/custom/summary", "", nil},
		{"unknown service", Request{Service: "aianalyst_groups"}, "", "", ErrInvalidRequest},
		{"no window", Request{Service: config.ServiceModelBreaches}, "", "", ErrInvalidRequest},
		{"inverted window", Request{Service: config.ServiceAntigena, Start: end, End: start}, "", "", ErrInvalidRequest},
		{"negative look-back", Request{Service: config.ServiceModelBreaches, Start: start, End: end, LookBack: -time.Minute}, "", "", ErrInvalidRequest},
		{"bad endpoint", Request{Service: config.ServiceStatus, Endpoint: "/status?x=1"}, "", "", ErrInvalidRequest},
		{"relative endpoint", Request{Service: config.ServiceStatus, Endpoint: "status"}, "", "", ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, query, err := tt.req.PathAndQuery()
			if !errors.Is(err, tt.wantErr) || path != tt.wantPath || query != tt.wantQuery {
				t.Fatalf("got %q %q %v, want %q %q %v", path, query, err, tt.wantPath, tt.wantQuery, tt.wantErr)
			}
		})
	}
}

// TestFetchGroundTruth checks every service against the fake's ground truth, byte for byte and
// in order: the fake verifies each request's signature over the exact query sent.
func TestFetchGroundTruth(t *testing.T) {
	t.Parallel()
	srv := darktracetest.NewServer(fakeOptions())
	defer srv.Close()
	c := newClient(t, srv.URL, nil, nil)
	end := srv.Options().End.Add(-2 * time.Hour)
	start := end.Add(-6 * time.Hour)
	for _, svc := range config.Services {
		t.Run(svc, func(t *testing.T) {
			req := Request{Service: svc, Start: start, End: end, LookBack: 30 * time.Minute}
			if svc == config.ServiceStatus || svc == config.ServiceSummary {
				req.Start, req.End = time.Time{}, time.Time{}
			}
			got, st, err := collect(t.Context(), c, req)
			if err != nil {
				t.Fatal(err)
			}
			qs := start.Add(-30 * time.Minute)
			want := srv.Events(svc, qs, end)
			if svc == config.ServiceModelBreaches {
				want = byCreation(srv, qs, end)
				slices.SortFunc(got, bytes.Compare)
			}
			if len(want) == 0 || !slices.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("got %d events, want %d (ground truth)", len(got), len(want))
			}
			if st.Events != len(want) || st.Bytes <= 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestErrorClassification(t *testing.T) {
	t.Parallel()
	start := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	breaches := Request{Service: config.ServiceModelBreaches, Start: start, End: start.Add(time.Hour)}
	tests := []struct {
		name       string
		fault      *darktracetest.Fault
		mod        func(*Config)
		req        *Request
		wantKind   Kind
		wantClass  Class
		wantStatus int
		wantPull   int
		wantMsg    string
		wantRetry  time.Duration
		sameClock  bool // the client uses the fake's clock (for Retry-After dates)
	}{
		{name: "signature", mod: func(c *Config) { c.PrivateToken = "wrong-private" },
			wantKind: KindSignature, wantClass: Transient, wantStatus: 400, wantPull: 300, wantMsg: "public and private tokens do not match"},
		{name: "unknown public token", mod: func(c *Config) { c.PublicToken = "nobody" },
			wantKind: KindSignature, wantClass: Transient, wantStatus: 400, wantPull: 300, wantMsg: "API SIGNATURE ERROR"},
		{name: "clock skew", mod: func(c *Config) { c.Now = func() time.Time { return time.Now().Add(31 * time.Minute) } },
			wantKind: KindDate, wantClass: Transient, wantStatus: 400, wantPull: 300, wantMsg: "within 30 minutes of the appliance's"},
		{name: "input error", fault: &darktracetest.Fault{Kind: darktracetest.FaultInputError},
			wantKind: KindInput, wantClass: Terminal, wantStatus: 400, wantPull: 300, wantMsg: "INPUT ERROR"},
		{name: "redirect to 403", fault: &darktracetest.Fault{Kind: darktracetest.FaultRedirect403},
			wantKind: KindPermission, wantClass: Terminal, wantStatus: 302, wantPull: 300, wantMsg: "the token lacks permission for /modelbreaches"},
		{name: "403", fault: &darktracetest.Fault{Kind: darktracetest.FaultForbidden},
			wantKind: KindPermission, wantClass: Terminal, wantStatus: 403, wantPull: 300, wantMsg: "the token lacks permission for /modelbreaches"},
		{name: "login page", fault: &darktracetest.Fault{Kind: darktracetest.FaultLoginPage},
			wantKind: KindPermission, wantClass: Terminal, wantStatus: 200, wantPull: 300, wantMsg: "the token lacks permission for /modelbreaches"},
		{name: "unknown endpoint", req: &Request{Service: config.ServiceSummary, Endpoint: "/nosuchthing"},
			wantKind: KindUnknownEndpoint, wantClass: Transient, wantStatus: 302, wantPull: 300, wantMsg: "does not know the endpoint /nosuchthing"},
		{name: "503", fault: &darktracetest.Fault{Kind: darktracetest.FaultStatus},
			wantKind: KindServer, wantClass: Retryable, wantStatus: 503, wantPull: 300, wantMsg: "HTTP 503 Service Unavailable"},
		{name: "502 retry-after", fault: &darktracetest.Fault{Kind: darktracetest.FaultStatus, Status: 502, RetryAfter: 4 * time.Second},
			wantKind: KindServer, wantClass: Retryable, wantStatus: 502, wantPull: 300, wantMsg: "HTTP 502", wantRetry: 4 * time.Second},
		{name: "429 seconds", fault: &darktracetest.Fault{Kind: darktracetest.FaultRateLimit, RetryAfter: 9 * time.Second},
			wantKind: KindRateLimited, wantClass: Retryable, wantStatus: 429, wantPull: 300, wantMsg: "retry after 9s", wantRetry: 9 * time.Second},
		{name: "429 date", fault: &darktracetest.Fault{Kind: darktracetest.FaultRateLimit, RetryAfter: 2 * time.Minute, RetryAfterDate: true},
			wantKind: KindRateLimited, wantClass: Retryable, wantStatus: 429, wantPull: 300, wantMsg: "rate limited", wantRetry: 2 * time.Minute, sameClock: true},
		{name: "truncated", fault: &darktracetest.Fault{Kind: darktracetest.FaultTruncate, AfterEvents: 2},
			wantKind: KindMalformed, wantClass: Retryable, wantStatus: 200, wantPull: 301, wantMsg: "malformed"},
		{name: "reset", fault: &darktracetest.Fault{Kind: darktracetest.FaultReset, AfterEvents: 1},
			wantClass: Retryable, wantStatus: 200, wantPull: 301},
		{name: "stall before headers", fault: &darktracetest.Fault{Kind: darktracetest.FaultStall}, mod: func(c *Config) { c.Timeout = 100 * time.Millisecond },
			wantKind: KindTimeout, wantClass: Retryable, wantStatus: 0, wantPull: 301, wantMsg: "no response within 100ms"},
		{name: "stall mid-body", fault: &darktracetest.Fault{Kind: darktracetest.FaultStall, AfterEvents: 2}, mod: func(c *Config) { c.Timeout = 100 * time.Millisecond },
			wantKind: KindTimeout, wantClass: Retryable, wantStatus: 200, wantPull: 301, wantMsg: "stalled for 100ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := fakeOptions()
			if tt.fault != nil {
				opts.Faults.Script = []darktracetest.Fault{*tt.fault}
			}
			srv := darktracetest.NewServer(opts)
			defer srv.Close()
			mod := tt.mod
			if tt.sameClock {
				mod = func(c *Config) { c.Now = opts.Now }
			}
			c := newClient(t, srv.URL, nil, mod)
			req := breaches
			if tt.req != nil {
				req = *tt.req
			}
			_, _, err := collect(t.Context(), c, req)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not a *Error", err)
			}
			if tt.wantKind != 0 && e.Kind != tt.wantKind {
				t.Errorf("Kind = %v, want %v (%v)", e.Kind, tt.wantKind, err)
			}
			if tt.wantKind == 0 && e.Kind != KindNetwork && e.Kind != KindMalformed {
				t.Errorf("reset: Kind = %v, want network or malformed (%v)", e.Kind, err)
			}
			if e.Class != tt.wantClass || IsRetryable(err) != (tt.wantClass != Terminal) {
				t.Errorf("Class = %v, want %v", e.Class, tt.wantClass)
			}
			if e.Status != tt.wantStatus || PullErrorID(err) != tt.wantPull {
				t.Errorf("Status %d PullError %d, want %d %d", e.Status, PullErrorID(err), tt.wantStatus, tt.wantPull)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.HasPrefix(err.Error(), fmt.Sprintf("PullError(%d): ", tt.wantPull)) {
				t.Errorf("message %q lacks %q", err, tt.wantMsg)
			}
			if got := RetryAfter(err); got < tt.wantRetry-time.Second || got > tt.wantRetry {
				t.Errorf("RetryAfter = %v, want %v", got, tt.wantRetry)
			}
			if srv.EndpointRequests("/403") != 0 || srv.EndpointRequests("/login") != 0 {
				t.Error("a redirect was followed")
			}
		})
	}
}

// TestStatusClassification covers statuses the fake does not produce.
func TestStatusClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code      int
		header    [2]string
		body      string
		wantKind  Kind
		wantClass Class
	}{
		{401, [2]string{}, `{"error":"Unauthorized"}`, KindAuth, Terminal},
		{404, [2]string{}, `{"error":"Not Found"}`, KindClient, Terminal},
		{400, [2]string{}, `{"advancedsearch":"API SIGNATURE ERROR"}`, KindSignature, Transient},
		{400, [2]string{}, `not json`, KindClient, Terminal},
		{400, [2]string{}, `API DATE ERROR`, KindDate, Transient},
		{400, [2]string{}, `{"error":"API SIGNATURE ERROR (bad hmac)"}`, KindSignature, Transient},
		{400, [2]string{}, `{"modelbreaches":"input error"}`, KindInput, Terminal},
		{401, [2]string{}, `{"response":"API SIGNATURE ERROR"}`, KindSignature, Transient},
		{401, [2]string{}, `{"response":"API DATE ERROR"}`, KindDate, Transient},
		{408, [2]string{}, ``, KindServer, Retryable},
		{500, [2]string{}, `<html>oops</html>`, KindServer, Retryable},
		{301, [2]string{"Location", "https://appliance/login"}, ``, KindUnknownEndpoint, Transient},
		{302, [2]string{"Location", "https://sso.example.com/saml"}, ``, KindPermission, Terminal},
		{204, [2]string{}, ``, KindServer, Retryable},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.code, tt.body), func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.header[0] != "" {
					w.Header().Set(tt.header[0], tt.header[1])
				}
				w.WriteHeader(tt.code)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			c := newClient(t, srv.URL, nil, nil)
			_, _, err := collect(t.Context(), c, Request{Service: config.ServiceStatus})
			if KindOf(err) != tt.wantKind || ClassOf(err) != tt.wantClass {
				t.Fatalf("got %v (kind %v), want %v %v", err, KindOf(err), tt.wantKind, tt.wantClass)
			}
		})
	}
}

func TestRetryAfterParsing(t *testing.T) {
	t.Parallel()
	now := time.Date(2024, 5, 10, 12, 0, 0, 0, time.UTC)
	c := &Client{now: func() time.Time { return now }}
	tests := []struct {
		v    string
		want time.Duration
	}{
		{"", 0}, {"0", 0}, {"-5", 0}, {"12", 12 * time.Second}, {" 3 ", 3 * time.Second},
		{"Fri, 10 May 2024 12:01:30 GMT", 90 * time.Second}, {"Fri, 10 May 2024 11:00:00 GMT", 0},
		{"soon", 0}, {"99999999999", 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := c.retryAfter(tt.v); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
}

func TestContextCanceled(t *testing.T) {
	t.Parallel()
	opts := fakeOptions()
	opts.Faults.Script = []darktracetest.Fault{{Kind: darktracetest.FaultStall}}
	srv := darktracetest.NewServer(opts)
	defer srv.Close()
	c := newClient(t, srv.URL, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, _, err := collect(ctx, c, Request{Service: config.ServiceStatus})
		done <- err
	}()
	waitFor(t, "the stalled request", func() bool { return srv.MaxInFlight() == 1 })
	cancel()
	err := <-done
	if KindOf(err) != KindCanceled || !errors.Is(err, context.Canceled) || !IsRetryable(err) {
		t.Fatalf("canceled fetch: %v (kind %v)", err, KindOf(err))
	}
}

func TestCallbackErrorIsNotClassified(t *testing.T) {
	t.Parallel()
	srv := darktracetest.NewServer(fakeOptions())
	defer srv.Close()
	c := newClient(t, srv.URL, nil, nil)
	stop := errors.New("stop here")
	n := 0
	start := srv.Options().End.Add(-6 * time.Hour)
	st, err := c.Fetch(t.Context(), Request{Service: config.ServiceModelBreaches, Start: start, End: start.Add(3 * time.Hour)},
		func([]byte) error {
			if n++; n == 3 {
				return stop
			}
			return nil
		})
	if !errors.Is(err, stop) || IsRetryable(err) || KindOf(err) != 0 || st.Events != 2 {
		t.Fatalf("callback error: %v, stats %+v", err, st)
	}
}

// TestFetchFaultsThenRecovers shows what a caller retrying Fetch sees: each failed attempt (a body
// cut short, a rate limit with its Retry-After, a connection reset midway) is Retryable, with the
// kind and PullError message of its cause, and the next clean attempt returns every event.
func TestFetchFaultsThenRecovers(t *testing.T) {
	t.Parallel()
	opts := fakeOptions()
	opts.Faults.Script = []darktracetest.Fault{
		{Kind: darktracetest.FaultTruncate, AfterEvents: 5},
		{Kind: darktracetest.FaultRateLimit, RetryAfter: time.Second},
		{Kind: darktracetest.FaultReset, AfterEvents: 3},
	}
	srv := darktracetest.NewServer(opts)
	defer srv.Close()
	c := newClient(t, srv.URL, nil, nil)
	start := srv.Options().End.Add(-10 * time.Hour)
	req := Request{Service: config.ServiceModelBreaches, Start: start, End: start.Add(4 * time.Hour)}
	for i, want := range []struct {
		kind       Kind
		retryAfter time.Duration
	}{{KindMalformed, 0}, {KindRateLimited, time.Second}, {KindNetwork, 0}} {
		_, _, err := collect(t.Context(), c, req)
		if !IsRetryable(err) || KindOf(err) != want.kind || RetryAfter(err) != want.retryAfter {
			t.Fatalf("attempt %d: %v (kind %v, retry after %v), want a retryable %v", i+1, err, KindOf(err), RetryAfter(err), want.kind)
		}
	}
	got, st, err := collect(t.Context(), c, req)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, bytes.Compare)
	if want := byCreation(srv, req.Start, req.End); !slices.EqualFunc(got, want, bytes.Equal) || st.Events != len(want) {
		t.Fatalf("got %d events (stats %+v), want %d", len(got), st, len(want))
	}
	// A terminal error is terminal.
	srv.AddFault(darktracetest.Fault{Kind: darktracetest.FaultForbidden})
	if _, _, err := collect(t.Context(), c, req); KindOf(err) != KindPermission || IsRetryable(err) {
		t.Fatalf("forbidden: %v", err)
	}
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	for attempt, ceiling := range map[int]time.Duration{0: 100 * time.Millisecond, 1: 100 * time.Millisecond, 2: 200 * time.Millisecond,
		3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		var maxSeen time.Duration
		for range 2000 {
			d := b.Delay(attempt)
			if d < 0 || d > ceiling {
				t.Fatalf("Delay(%d) = %v outside [0, %v]", attempt, d, ceiling)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < ceiling/2 {
			t.Fatalf("Delay(%d) never above %v: no jitter over the full range", attempt, maxSeen)
		}
	}
	if d := (Backoff{}).Delay(100); d > DefaultBackoffMax {
		t.Fatalf("zero Backoff: %v", d)
	}
}

func TestLocalLimiter(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if err := NewLocalLimiter(0).Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := NewLocalLimiter(-1).Wait(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("unlimited limiter ignored a canceled context: %v", err)
	}
	l := NewLocalLimiter(1e6)
	for range 10 {
		if err := l.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	slow := NewLocalLimiter(0.001)
	slow.Wait(t.Context()) // the one burst token
	if err := slow.Wait(canceled); err == nil {
		t.Fatal("limited Wait with a canceled context succeeded")
	}
}

// countingLimiter counts Wait calls.
type countingLimiter struct{ n atomic.Int64 }

func (l *countingLimiter) Wait(ctx context.Context) error { l.n.Add(1); return ctx.Err() }

func TestLimiterCalledBeforeEveryRequest(t *testing.T) {
	t.Parallel()
	opts := fakeOptions()
	opts.Faults.Script = []darktracetest.Fault{{Kind: darktracetest.FaultStatus}, {Kind: darktracetest.FaultStatus}}
	srv := darktracetest.NewServer(opts)
	defer srv.Close()
	lim := &countingLimiter{}
	c := newClient(t, srv.URL, nil, func(c *Config) { c.Limiter = lim })
	for i := range 3 {
		_, err := c.Fetch(t.Context(), Request{Service: config.ServiceSummary}, func([]byte) error { return nil })
		if (err == nil) != (i == 2) {
			t.Fatalf("fetch %d: %v", i+1, err)
		}
	}
	if err := c.Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	if lim.n.Load() != 4 || srv.Requests() != 4 {
		t.Fatalf("limiter waited %d times for %d requests", lim.n.Load(), srv.Requests())
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	srv := darktracetest.NewServer(fakeOptions())
	defer srv.Close()
	var logs logtest.Buffer
	if err := newClient(t, srv.URL, &logs, nil).Check(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `msg="Tokens have been validated successfully."`) {
		t.Fatalf("logs: %s", logs.String())
	}
	err := newClient(t, srv.URL, nil, func(c *Config) { c.PrivateToken = "bad" }).Check(t.Context())
	if KindOf(err) != KindSignature || !strings.HasPrefix(err.Error(), "validating tokens: PullError(300)") {
		t.Fatalf("bad tokens: %v", err)
	}
}

// TestProxy sends requests through a forward proxy, and shows that a proxy which alters the
// query breaks the signature with a message that says so.
func TestProxy(t *testing.T) {
	t.Parallel()
	srv := darktracetest.NewServer(fakeOptions())
	defer srv.Close()
	var proxied atomic.Int64
	var rewrite atomic.Bool
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		out := r.Clone(r.Context())
		out.RequestURI = ""
		if rewrite.Load() {
			out.URL.RawQuery = strings.ReplaceAll(out.URL.RawQuery, "true", "True")
		}
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	defer http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	proxyURL, _ := url.Parse(proxy.URL)
	c := newClient(t, srv.URL, nil, func(c *Config) { c.Proxy = http.ProxyURL(proxyURL) })
	got, _, err := collect(t.Context(), c, Request{Service: config.ServiceStatus})
	if err != nil || len(got) != 1 || proxied.Load() != 1 {
		t.Fatalf("through proxy: %v, %d events, %d proxied", err, len(got), proxied.Load())
	}
	rewrite.Store(true)
	_, _, err = collect(t.Context(), c, Request{Service: config.ServiceStatus})
	if KindOf(err) != KindSignature || !strings.Contains(err.Error(), "a proxy altered the request") {
		t.Fatalf("altering proxy: %v", err)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	srv := darktracetest.NewTLSServer(fakeOptions())
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logtest.Buffer
	tests := []struct {
		name     string
		mod      func(*Config)
		wantKind Kind
		wantWarn bool
	}{
		{"system roots reject the self-signed certificate", nil, KindTLS, false},
		{"CA file", func(c *Config) { c.CAFile = caFile }, 0, false},
		{"insecure", func(c *Config) { c.InsecureSkipVerify = true; c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, srv.URL, nil, tt.mod)
			err := c.Check(t.Context())
			if KindOf(err) != tt.wantKind || (tt.wantKind == 0) != (err == nil) {
				t.Fatalf("Check: %v", err)
			}
			if tt.wantKind == KindTLS && (IsRetryable(err) || !strings.Contains(err.Error(), "tls.ca_file")) {
				t.Fatalf("TLS failure not terminal or without a hint: %v", err)
			}
		})
	}
	if strings.Count(logs.String(), "level=WARN") != 1 || !strings.Contains(logs.String(), "insecure_skip_verify") {
		t.Fatalf("insecure warning logged wrongly:\n%s", logs.String())
	}
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"empty URL", Config{PublicToken: "a", PrivateToken: "b"}, "base URL is empty"},
		{"ftp", Config{BaseURL: "ftp://x", PublicToken: "a", PrivateToken: "b"}, "scheme"},
		{"user info", Config{BaseURL: "https://u:p@x", PublicToken: "a", PrivateToken: "b"}, "without credentials"},
		{"no public", Config{BaseURL: "https://x", PrivateToken: "b"}, "public token is empty"},
		{"no private", Config{BaseURL: "https://x", PublicToken: "a"}, "private token is empty"},
		{"missing CA", Config{BaseURL: "https://x", PublicToken: "a", PrivateToken: "b", CAFile: filepath.Join(dir, "none.pem")}, "reading CA file"},
		{"bad CA", Config{BaseURL: "https://x", PublicToken: "a", PrivateToken: "b", CAFile: notPEM}, "no PEM certificate"},
		{"negative timeout", Config{BaseURL: "https://x", PublicToken: "a", PrivateToken: "b", Timeout: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tt.cfg)
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
	c, err := New(Config{BaseURL: "appliance.example.com/", PublicToken: "a", PrivateToken: "b"})
	if err != nil || c.base.String() != "https://appliance.example.com" {
		t.Fatalf("scheme-less URL: %v %v", c, err)
	}
	c.Close()
}

// TestTokenNeverLeaks runs every failure and success path with a distinctive private token and
// checks that neither the token nor a signature appears in any error or log line.
func TestTokenNeverLeaks(t *testing.T) {
	t.Parallel()
	var logs logtest.Buffer
	var errs []string
	kinds := []darktracetest.FaultKind{
		darktracetest.FaultStatus, darktracetest.FaultRateLimit, darktracetest.FaultReset, darktracetest.FaultTruncate,
		darktracetest.FaultLoginPage, darktracetest.FaultRedirect403, darktracetest.FaultForbidden, darktracetest.FaultInputError,
		darktracetest.FaultSignatureError, darktracetest.FaultDateError,
	}
	opts := fakeOptions()
	for _, k := range kinds {
		opts.Faults.Script = append(opts.Faults.Script, darktracetest.Fault{Kind: k, AfterEvents: 1})
	}
	var signatures []string
	opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := darktracetest.NewServer(opts)
	defer srv.Close()
	sniff := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		signatures = append(signatures, r.Header.Get("DTAPI-Signature"))
		http.Redirect(w, r, srv.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer sniff.Close()
	c := newClient(t, srv.URL, &logs, nil)
	req := Request{Service: config.ServiceModelBreaches, Start: srv.Options().End.Add(-5 * time.Hour), End: srv.Options().End.Add(-4 * time.Hour)}
	for range kinds {
		_, err := c.Fetch(t.Context(), req, func([]byte) error { return nil })
		errs = append(errs, fmt.Sprint(err), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
	}
	for _, mod := range []func(*Config){
		func(c *Config) { c.PrivateToken = privateToken + "x" },
		func(c *Config) { c.Now = func() time.Time { return time.Now().Add(-time.Hour) } },
		func(c *Config) { c.BaseURL = "http://127.0.0.1:1" },
		func(c *Config) { c.BaseURL = sniff.URL },
	} {
		bad := newClient(t, srv.URL, &logs, mod)
		_, err := bad.Fetch(t.Context(), req, func([]byte) error { return nil })
		errs = append(errs, fmt.Sprint(err), fmt.Sprintf("%#v", err), fmt.Sprint(bad.Check(t.Context())))
	}
	cfg := Config{BaseURL: srv.URL, PublicToken: publicToken, PrivateToken: privateToken}
	errs = append(errs, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg))
	all := strings.Join(errs, "\n") + logs.String()
	if len(signatures) == 0 {
		t.Fatal("no signature sniffed")
	}
	for _, secret := range append(signatures, privateToken, "PRIV-zz9") {
		if secret != "" && strings.Contains(all, secret) {
			t.Fatalf("%q leaked into errors or logs:\n%s", secret, all)
		}
	}
}

// TestStreamsLargeResponse fetches a response far larger than any buffer, showing that events
// stream (the heap check is in BenchmarkFetch's B/op).
func TestStreamsLargeResponse(t *testing.T) {
	t.Parallel()
	opts := fakeOptions()
	opts.EventSize = 50_000
	opts.EventsPerHour = map[string]float64{config.ServiceModelBreaches: 400}
	srv := darktracetest.NewServer(opts)
	defer srv.Close()
	c := newClient(t, srv.URL, nil, nil)
	start := srv.Options().End.Add(-4 * time.Hour)
	var n int
	var largest int
	st, err := c.Fetch(t.Context(), Request{Service: config.ServiceModelBreaches, Start: start, End: start.Add(time.Hour)}, func(raw []byte) error {
		n++
		largest = max(largest, len(raw))
		return nil
	})
	if err != nil || n < 300 || st.Bytes < 15<<20 || largest > 60_000 {
		t.Fatalf("err %v, %d events, %d bytes, largest %d", err, n, st.Bytes, largest)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func FuzzStatusError(f *testing.F) {
	for _, s := range []struct {
		code int
		body string
	}{
		{400, `{"response":"API SIGNATURE ERROR"}`}, {400, `{"response":"API DATE ERROR"}`},
		{400, `{"summarystatistics":"INPUT ERROR"}`}, {302, "Found. Redirecting to /403"},
		{302, "Found. Redirecting to /login"}, {429, ""}, {503, "<html>\n</html>"}, {403, `{"error":"Forbidden"}`},
	} {
		f.Add(s.code, []byte(s.body), "")
	}
	c := &Client{now: time.Now}
	f.Fuzz(func(t *testing.T, code int, body []byte, retry string) {
		if code < 100 || code > 999 || code == 200 {
			return
		}
		resp := &http.Response{StatusCode: code, Header: http.Header{"Retry-After": {retry}, "Location": {string(body)}}}
		e := c.statusError(resp, body, "/x")
		if e.Class != e.Kind.class() || e.RetryAfter < 0 || e.Status != code {
			t.Fatalf("inconsistent error %+v", e)
		}
		msg := e.Error()
		if strings.ContainsAny(msg, "\n\r") {
			t.Fatalf("multi-line message %q", msg)
		}
	})
}

func FuzzIsHTML(f *testing.F) {
	f.Add("text/html", []byte("<!DOCTYPE html>"))
	f.Add("application/json", []byte(`[{"pbid":1}]`))
	f.Add("", []byte("\xef\xbb\xbf  <html>"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		got := isHTML(ct, bufio.NewReader(bytes.NewReader(body)))
		trimmed := bytes.TrimLeft(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), " \t\r\n")
		if !strings.Contains(strings.ToLower(ct), "html") && len(body) <= 512 && got != (len(trimmed) > 0 && trimmed[0] == '<') {
			t.Fatalf("isHTML(%q, %q) = %v", ct, body, got)
		}
	})
}

// BenchmarkFetch measures Fetch throughput against the fake over loopback: MB/s from SetBytes,
// events/s as a custom metric.
func BenchmarkFetch(b *testing.B) {
	for _, size := range []int{2000, 12000} {
		b.Run(fmt.Sprintf("event=%dB", size), func(b *testing.B) {
			opts := fakeOptions()
			opts.EventSize = size
			opts.EventsPerHour = map[string]float64{config.ServiceModelBreaches: 5000}
			srv := darktracetest.NewServer(opts)
			defer srv.Close()
			c := newClient(b, srv.URL, nil, nil)
			start := srv.Options().End.Add(-3 * time.Hour)
			req := Request{Service: config.ServiceModelBreaches, Start: start, End: start.Add(time.Hour)}
			var bytesRead, evs int64
			for b.Loop() {
				st, err := c.Fetch(b.Context(), req, func([]byte) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				bytesRead += st.Bytes
				evs += int64(st.Events)
			}
			b.SetBytes(bytesRead / int64(b.N))
			b.ReportMetric(float64(evs)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// byCreation returns the breaches a creationtime=true window [start, end] must return: those whose
// creationTime is in it (a tidy fake creates a breach at most an hour after its time), sorted
// bytewise.
func byCreation(srv *darktracetest.Server, start, end time.Time) [][]byte {
	var out [][]byte
	for _, raw := range srv.Events(config.ServiceModelBreaches, start.Add(-2*time.Hour), end) {
		var b struct {
			CreationTime int64 `json:"creationTime"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			panic(err)
		}
		if b.CreationTime >= start.UnixMilli() && b.CreationTime <= end.UnixMilli() {
			out = append(out, raw)
		}
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}
