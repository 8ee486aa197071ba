package darktracetest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

func TestParseFault(t *testing.T) {
	t.Parallel()
	s, e := time.Date(2024, 5, 9, 10, 0, 0, 0, time.UTC), time.Date(2024, 5, 9, 11, 0, 0, 0, time.UTC)
	tests := []struct {
		spec    string
		want    Fault
		wantErr string
	}{
		{"status", Fault{Kind: FaultStatus}, ""},
		{"status,status=502,times=3,retry_after=2s", Fault{Kind: FaultStatus, Status: 502, Times: 3, RetryAfter: 2 * time.Second}, ""},
		{"rate_limit,retry_after=5s,retry_after_date=true", Fault{Kind: FaultRateLimit, RetryAfter: 5 * time.Second, RetryAfterDate: true}, ""},
		{"truncate,endpoint=/modelbreaches,after_events=2", Fault{Kind: FaultTruncate, Endpoint: "/modelbreaches", AfterEvents: 2}, ""},
		{"stall,stall=1s", Fault{Kind: FaultStall, Stall: time.Second}, ""},
		{"reset,times=1", Fault{Kind: FaultReset}, ""},
		{"login_page,service=status", Fault{Kind: FaultLoginPage, Endpoint: "/status"}, ""},
		{"redirect_403,service=aianalyst_incidentevents", Fault{Kind: FaultRedirect403, Endpoint: "/aianalyst/incidentevents"}, ""},
		{"forbidden", Fault{Kind: FaultForbidden}, ""},
		{"signature_error", Fault{Kind: FaultSignatureError}, ""},
		{"date_error", Fault{Kind: FaultDateError}, ""},
		{"input_error,service=modelbreaches,start=2024-05-09T10:00:00Z,end=1715252400000,times=-1",
			Fault{Kind: FaultInputError, Endpoint: "/modelbreaches", Start: s, End: e, Times: -1}, ""},
		{"explode", Fault{}, "unknown fault kind"},
		{"status,times", Fault{}, "not key=value"},
		{"status,colour=red", Fault{}, "unknown key"},
		{"status,status=1000", Fault{}, "not an HTTP status code"},
		{"status,service=devices", Fault{}, "is not one of"},
		{"status,endpoint=modelbreaches", Fault{}, "must be a path"},
		{"status,start=yesterday", Fault{}, "neither RFC 3339"},
		{"stall,stall=-1s", Fault{}, "negative"},
		{"reset,after_events=-2", Fault{}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseFault(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFault(%q) = %+v, %v; want an error containing %q", tt.spec, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseFault(%q) = %+v, %v; want %+v", tt.spec, got, err, tt.want)
			}
		})
	}
}

// control sends an unsigned request to the control API.
func control(t *testing.T, h http.Handler, method, target, body string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, "http://appliance"+target, strings.NewReader(body)))
	return rec
}

func TestControlHandler(t *testing.T) {
	t.Parallel()
	fake := NewHandler(testOptions())
	h := fake.WithControl()
	s, e := time.Date(2024, 5, 9, 10, 0, 0, 0, time.UTC), time.Date(2024, 5, 9, 11, 0, 0, 0, time.UTC)

	// Ground truth: keys and events agree with the Go API.
	rec := control(t, h, http.MethodGet, "/_dtfleet/truth/keys?service=modelbreaches", "")
	var keys struct {
		Count int      `json:"count"`
		Keys  []string `json:"keys"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &keys) != nil || keys.Count == 0 ||
		strings.Join(keys.Keys, ",") != strings.Join(fake.KeysIn(config.ServiceModelBreaches, fake.Options().Start, testNow), ",") {
		t.Fatalf("truth/keys: %d %.200s", rec.Code, rec.Body)
	}
	rec = control(t, h, http.MethodGet, "/_dtfleet/truth/events?service=antigena&start=2024-05-09T10:00:00Z&end=2024-05-09T11:00:00Z", "")
	want := bytes.Join(fake.AllEvents(config.ServiceAntigena, s, e), []byte("\n"))
	if rec.Code != 200 || len(want) == 0 || !bytes.Equal(bytes.TrimSuffix(rec.Body.Bytes(), []byte("\n")), want) {
		t.Fatalf("truth/events: %d %.200s", rec.Code, rec.Body)
	}
	rec = control(t, h, http.MethodGet, "/_dtfleet/truth/response?service=aianalyst_incidentevents&start=1715248800000&end=1715252400000", "")
	want = bytes.Join(fake.Events(config.ServiceIncidentEvents, s, e), []byte("\n"))
	if rec.Code != 200 || !bytes.Equal(bytes.TrimSuffix(rec.Body.Bytes(), []byte("\n")), want) {
		t.Fatalf("truth/response: %d %.200s", rec.Code, rec.Body)
	}
	for _, bad := range []string{"/_dtfleet/truth/keys?service=devices", "/_dtfleet/truth/events?service=antigena&start=soon"} {
		if rec := control(t, h, http.MethodGet, bad, ""); rec.Code != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", bad, rec.Code)
		}
	}

	// Scripted faults: added over HTTP, consumed by signed API requests, cleared.
	rec = control(t, h, http.MethodPost, "/_dtfleet/faults", "forbidden,service=antigena\n\nstatus,status=502,endpoint=/status,times=2\n")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"pending":2`) {
		t.Fatalf("POST faults: %d %s", rec.Code, rec.Body)
	}
	if c := get(t, h, "/antigena").Code; c != http.StatusForbidden {
		t.Fatalf("scripted forbidden: %d", c)
	}
	if c := get(t, h, "/status").Code; c != http.StatusBadGateway {
		t.Fatalf("scripted 502: %d", c)
	}
	if rec := control(t, h, http.MethodPost, "/_dtfleet/faults", "status\nexplode\n"); rec.Code != http.StatusBadRequest || fake.PendingFaults() != 1 {
		t.Fatalf("bad spec: %d, %d pending (a bad batch must add nothing)", rec.Code, fake.PendingFaults())
	}
	if rec := control(t, h, http.MethodDelete, "/_dtfleet/faults", ""); rec.Code != 200 || fake.PendingFaults() != 0 {
		t.Fatalf("DELETE faults: %d, %d pending", rec.Code, fake.PendingFaults())
	}
	if c := get(t, h, "/status").Code; c != http.StatusOK {
		t.Fatalf("after clearing: %d", c)
	}

	rec = control(t, h, http.MethodGet, "/_dtfleet/stats", "")
	var stats struct {
		Requests  int64            `json:"requests"`
		Endpoints map[string]int64 `json:"endpoints"`
	}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &stats) != nil || stats.Requests != 3 || stats.Endpoints["/status"] != 2 {
		t.Fatalf("stats: %d %s", rec.Code, rec.Body)
	}
	// The API itself still authenticates and still redirects unknown paths to /login.
	if rec := get(t, h, "/devices"); rec.Code != http.StatusFound || rec.Header().Get("Location") != "/login" {
		t.Fatalf("unknown endpoint: %d %s", rec.Code, rec.Header().Get("Location"))
	}
}
