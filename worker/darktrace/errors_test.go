package darktrace

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// errorsFake starts a fake appliance whose base clock is the real one frozen to the minute (the
// client dates its requests with the real clock), with the given untidiness and faults.
func errorsFake(t *testing.T, untidy darktracetest.Untidiness, faults ...darktracetest.Fault) *darktracetest.Server {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Minute)
	end := now.Truncate(time.Hour).Add(time.Hour)
	srv := darktracetest.NewServer(darktracetest.Options{
		PublicToken: "pub-errors", PrivateToken: "priv-errors", Seed: 3,
		Start: end.Add(-6 * time.Hour), End: end, Now: func() time.Time { return now }, EventSize: 1500,
		Untidy: untidy, Faults: darktracetest.Faults{Script: faults},
	})
	t.Cleanup(srv.Close)
	return srv
}

// errorsClient returns a client for srv; hostNow, when set, is the client's clock.
func errorsClient(t *testing.T, srv *darktracetest.Server, private string, hostNow func() time.Time) *Client {
	t.Helper()
	c, err := New(Config{
		BaseURL: srv.URL, PublicToken: "pub-errors", PrivateToken: config.Secret(private), Timeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Proxy:  func(*http.Request) (*url.URL, error) { return nil, nil },
		Now:    hostNow,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// breachesReq is a one-hour model breach request inside the fake's data.
func breachesReq(srv *darktracetest.Server) Request {
	end := srv.Options().End.Add(-2 * time.Hour)
	return Request{Service: config.ServiceModelBreaches, Start: end.Add(-time.Hour), End: end}
}

// TestTransientClasses: the answers that clear by themselves on a real appliance are Transient
// (retried, for a bounded time), not Terminal, and their messages say what to check.
func TestTransientClasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		fault    *darktracetest.Fault
		untidy   darktracetest.Untidiness
		private  string
		wantKind Kind
		wantMsg  []string
	}{
		{name: "date error, appliance clock 40m ahead", untidy: darktracetest.Untidiness{ClockOffset: 40 * time.Minute},
			wantKind: KindDate, wantMsg: []string{"API DATE ERROR", "the appliance's Date header", "the host is 40m0s behind the appliance", "NTP"}},
		{name: "date error, appliance clock 45m behind", untidy: darktracetest.Untidiness{ClockOffset: -45 * time.Minute},
			wantKind: KindDate, wantMsg: []string{"the host is 45m0s ahead of the appliance"}},
		{name: "date error fault", fault: &darktracetest.Fault{Kind: darktracetest.FaultDateError},
			wantKind: KindDate, wantMsg: []string{"the host is 0s ahead of the appliance"}},
		{name: "signature error (rotated token pair)", private: "priv-rotated",
			wantKind: KindSignature, wantMsg: []string{"API SIGNATURE ERROR", "check that public_token and private_token are the current pair"}},
		{name: "signature error fault", fault: &darktracetest.Fault{Kind: darktracetest.FaultSignatureError},
			wantKind: KindSignature, wantMsg: []string{"rotated pair"}},
		{name: "redirect to the login page", fault: &darktracetest.Fault{Kind: darktracetest.FaultLoginRedirect},
			wantKind: KindUnknownEndpoint, wantMsg: []string{"redirect to /login", "login page for a while"}},
		{name: "maintenance page", fault: &darktracetest.Fault{Kind: darktracetest.FaultMaintenance, Status: 502},
			wantKind: KindMaintenance, wantMsg: []string{"HTTP 502 with an HTML maintenance page", "being upgraded or restarted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var faults []darktracetest.Fault
			if tt.fault != nil {
				faults = append(faults, *tt.fault)
			}
			srv := errorsFake(t, tt.untidy, faults...)
			private := "priv-errors"
			if tt.private != "" {
				private = tt.private
			}
			c := errorsClient(t, srv, private, srv.Options().Now)
			_, err := c.Fetch(t.Context(), breachesReq(srv), func([]byte) error { return nil })
			if KindOf(err) != tt.wantKind || ClassOf(err) != Transient || !IsRetryable(err) {
				t.Fatalf("got kind %v class %v retryable %v (%v), want %v transient", KindOf(err), ClassOf(err), IsRetryable(err), err, tt.wantKind)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
			if strings.Contains(err.Error(), private) {
				t.Errorf("message %q contains the private token", err)
			}
		})
	}
}

// TestGatewayErrorStaysRetryable: a 5xx page that does not announce maintenance (a gateway's
// "502 Bad Gateway") stays KindServer and Retryable without bound.
func TestGatewayErrorStaysRetryable(t *testing.T) {
	t.Parallel()
	srv := errorsFake(t, darktracetest.Untidiness{}, darktracetest.Fault{Kind: darktracetest.FaultStatus, Status: 502})
	c := errorsClient(t, srv, "priv-errors", srv.Options().Now)
	_, err := c.Fetch(t.Context(), breachesReq(srv), func([]byte) error { return nil })
	if KindOf(err) != KindServer || ClassOf(err) != Retryable || ClassAfter(err, 24*time.Hour, time.Minute) != Retryable {
		t.Fatalf("got kind %v class %v (%v)", KindOf(err), ClassOf(err), err)
	}
}

// TestTransientFailuresThenFullResponse: a burst of transient failures gives one retryable
// (Transient) error per request, and the request then succeeds with the full response.
func TestTransientFailuresThenFullResponse(t *testing.T) {
	t.Parallel()
	srv := errorsFake(t, darktracetest.Untidiness{},
		darktracetest.Fault{Kind: darktracetest.FaultDateError},
		darktracetest.Fault{Kind: darktracetest.FaultSignatureError},
		darktracetest.Fault{Kind: darktracetest.FaultLoginRedirect},
		darktracetest.Fault{Kind: darktracetest.FaultMaintenance},
	)
	c := errorsClient(t, srv, "priv-errors", srv.Options().Now)
	req := breachesReq(srv)
	var n int
	for attempt := 1; ; attempt++ {
		n = 0
		_, err := c.Fetch(t.Context(), req, func([]byte) error { n++; return nil })
		if err == nil {
			if attempt != 5 {
				t.Fatalf("succeeded on attempt %d, want 5 (four scripted faults first)", attempt)
			}
			break
		}
		if attempt >= 5 || ClassOf(err) != Transient || !IsRetryable(err) {
			t.Fatalf("attempt %d: class %v (%v), want a transient error", attempt, ClassOf(err), err)
		}
	}
	if want := len(byCreation(srv, req.Start, req.End)); n == 0 || n != want {
		t.Fatalf("got %d events, want %d", n, want)
	}
}

// TestClassAfter: Transient failures count as Terminal once they have lasted the limit; the
// other classes do not change with time.
func TestClassAfter(t *testing.T) {
	t.Parallel()
	transient := fmt.Errorf("fetching: %w", newError(KindDate, "/modelbreaches", 400, "API DATE ERROR", nil))
	retryable := newError(KindServer, "/modelbreaches", 503, "HTTP 503", nil)
	terminal := newError(KindInput, "/modelbreaches", 400, "INPUT ERROR", nil)
	tests := []struct {
		name       string
		err        error
		failingFor time.Duration
		limit      time.Duration
		want       Class
	}{
		{"transient at first", transient, 0, 10 * time.Minute, Transient},
		{"transient within the limit", transient, 10*time.Minute - time.Nanosecond, 10 * time.Minute, Transient},
		{"transient at the limit", transient, 10 * time.Minute, 10 * time.Minute, Terminal},
		{"default limit not reached", transient, DefaultTransientFor - time.Second, 0, Transient},
		{"default limit reached", transient, DefaultTransientFor, 0, Terminal},
		{"negative limit never ends", transient, 1000 * time.Hour, -1, Transient},
		{"retryable stays retryable", retryable, 1000 * time.Hour, time.Minute, Retryable},
		{"terminal at once", terminal, 0, time.Hour, Terminal},
		{"unclassified", errors.New("callback failed"), time.Hour, time.Minute, 0},
		{"nil", nil, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassAfter(tt.err, tt.failingFor, tt.limit); got != tt.want {
				t.Fatalf("ClassAfter = %v, want %v", got, tt.want)
			}
		})
	}
	for k, want := range map[Kind]Class{
		KindSignature: Transient, KindDate: Transient, KindUnknownEndpoint: Transient, KindMaintenance: Transient,
		KindAuth: Terminal, KindPermission: Terminal, KindInput: Terminal, KindClient: Terminal, KindTLS: Terminal,
		KindRateLimited: Retryable, KindServer: Retryable, KindTimeout: Retryable, KindNetwork: Retryable,
		KindMalformed: Retryable, KindCanceled: Retryable,
	} {
		if got := k.class(); got != want {
			t.Errorf("%v: class %v, want %v", k, got, want)
		}
	}
	if Transient.String() != "transient" {
		t.Errorf("Transient.String() = %q", Transient.String())
	}
}

// TestMaintenancePageDetection: only an HTML page announcing maintenance or an upgrade makes a
// 5xx KindMaintenance.
func TestMaintenancePageDetection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ct, body string
		want     Kind
	}{
		{"text/html", "<html><title>Scheduled Maintenance</title></html>", KindMaintenance},
		{"", "\n  <!DOCTYPE html><p>The system is being upgraded</p>", KindMaintenance},
		{"text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>", KindServer},
		{"application/json", `{"error":"maintenance"}`, KindServer},
	}
	for _, tt := range tests {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tt.ct != "" {
				w.Header().Set("Content-Type", tt.ct)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, tt.body)
		}))
		c, err := New(Config{BaseURL: srv.URL, PublicToken: "p", PrivateToken: "q",
			Logger: slog.New(slog.DiscardHandler), Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Fetch(t.Context(), Request{Service: config.ServiceStatus}, func([]byte) error { return nil })
		c.Close()
		srv.Close()
		if KindOf(err) != tt.want {
			t.Errorf("%q %q: kind %v, want %v (%v)", tt.ct, tt.body, KindOf(err), tt.want, err)
		}
	}
}
