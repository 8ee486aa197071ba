package darktracetest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor polls cond until it holds, failing the test after 10 seconds.
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

// testNow is the fixed appliance clock of most tests.
var testNow = time.Date(2024, 5, 10, 12, 30, 0, 0, time.UTC)

// testOptions is a small dataset ending at testNow's hour + 1.
func testOptions() Options {
	return Options{
		Seed:  42,
		Start: time.Date(2024, 5, 8, 0, 0, 0, 0, time.UTC),
		End:   time.Date(2024, 5, 10, 13, 0, 0, 0, time.UTC),
		Now:   func() time.Time { return testNow },
		// Small breaches keep the tests fast; TestEventSize covers the full sample shape.
		EventSize: 1500,
		EventsPerHour: map[string]float64{
			config.ServiceModelBreaches: 20, config.ServiceIncidentEvents: 6, config.ServiceAntigena: 8,
		},
	}
}

// sign is an independent implementation of the reference's signature.
func sign(private, public, apiRequest, date string) string {
	mac := hmac.New(sha1.New, []byte(private))
	io.WriteString(mac, apiRequest+"\n"+public+"\n"+date)
	return hex.EncodeToString(mac.Sum(nil))
}

// get sends a signed GET of pathQuery to h with the fake's default tokens and testNow's date.
func get(t testing.TB, h http.Handler, pathQuery string) *httptest.ResponseRecorder {
	t.Helper()
	date := testNow.Format("20060102T150405")
	return do(t, h, http.MethodGet, pathQuery, DefaultPublicToken, date, sign(DefaultPrivateToken, DefaultPublicToken, pathQuery, date))
}

func do(t testing.TB, h http.Handler, method, pathQuery, token, date, sig string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "http://appliance"+pathQuery, nil)
	req.Header.Set("DTAPI-Token", token)
	req.Header.Set("DTAPI-Date", date)
	req.Header.Set("DTAPI-Signature", sig)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// splitArray returns the compact elements of a JSON array body.
func splitArray(t testing.TB, body []byte) [][]byte {
	t.Helper()
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		t.Fatalf("body is not a JSON array: %v: %.200s", err, body)
	}
	out := make([][]byte, len(raws))
	for i, r := range raws {
		out[i] = r
	}
	return out
}

func TestReferenceSignatureVectors(t *testing.T) {
	t.Parallel()
	// Vectors 1, 5 and 7 of darktrace-api.md §1.4, with the appliance clock at their date.
	const private, public = "7chbwad4hl4n5ok69e2edrs2ogpiqy8ldd5oozdb", "118v8jecrbrtkucou5a34hsbzounohx6jce61dwy"
	h := NewHandler(Options{
		PublicToken: public, PrivateToken: private,
		Start: time.Date(2023, 12, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2024, 1, 1, 1, 0, 0, 0, time.UTC),
		Now: func() time.Time { return time.Date(2023, 1, 1, 12, 10, 0, 0, time.UTC) },
	})
	tests := []struct {
		name, apiRequest, date, sig string
	}{
		{"vector 1", "/modelbreaches?starttime=1701388800000&endtime=1704070800000", "20230101T120000", "f19ae16721cc0e020ad12ec372cb15fa93bf3626"},
		{"vector 5", "/modelbreaches?starttime=1701388800000&endtime=1704070800000", "2023-01-01 12:00:00", "60d91c37273dc6ffb5c252caa105b7800dc86db4"},
		{"vector 6", "/status", "20230101T120000", "b240860c99316761ad8344feb36b1129e53518d6"},
		{"vector 7", "/aianalyst/incidentevents?starttime=1701388800000&endtime=1704070800000&includeallpinned=false", "20230101T120000", "ef9c3ba05d27b0d401eba1a25a289a59e19ddef7"},
		{"uppercase hex", "/status", "20230101T120000", "B240860C99316761AD8344FEB36B1129E53518D6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := do(t, h, http.MethodGet, tt.apiRequest, public, tt.date, tt.sig)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d, body %s", rec.Code, rec.Body)
			}
		})
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	const pq = "/summarystatistics"
	valid := func(date string) string { return sign(DefaultPrivateToken, DefaultPublicToken, pq, date) }
	tests := []struct {
		name             string
		method, token    string
		date, sig        string
		wantCode         int
		wantBodyContains string
	}{
		{"compact date", "GET", DefaultPublicToken, "20240510T123000", "", 200, "bandwidth"},
		{"T date", "GET", DefaultPublicToken, "2024-05-10T12:30:00", "", 200, "bandwidth"},
		{"spaced date", "GET", DefaultPublicToken, "2024-05-10 12:30:00", "", 200, "bandwidth"},
		{"RFC 1123 without zone", "GET", DefaultPublicToken, "Fri, 10 May 2024 12:30:00", "", 200, "bandwidth"},
		{"RFC 1123 GMT", "GET", DefaultPublicToken, "Fri, 10 May 2024 12:30:00 GMT", "", 200, "bandwidth"},
		{"ctime", "GET", DefaultPublicToken, "Fri May 10 12:30:00 2024", "", 200, "bandwidth"},
		{"RFC 3339", "GET", DefaultPublicToken, "2024-05-10T12:30:00Z", "", 200, "bandwidth"},
		{"RFC 3339 fraction offset", "GET", DefaultPublicToken, "2024-05-10T14:30:00.123456+02:00", "", 200, "bandwidth"},
		{"naive fraction", "GET", DefaultPublicToken, "2024-05-10T12:30:00.123456", "", 200, "bandwidth"},
		{"29 minutes ahead", "GET", DefaultPublicToken, "20240510T125900", "", 200, "bandwidth"},
		{"31 minutes ahead", "GET", DefaultPublicToken, "20240510T130100", "", 400, `{"response":"API DATE ERROR"}`},
		{"31 minutes behind", "GET", DefaultPublicToken, "20240510T115900", "", 400, `{"response":"API DATE ERROR"}`},
		{"garbage date", "GET", DefaultPublicToken, "yesterday", "", 400, `{"response":"API DATE ERROR"}`},
		{"wrong signature", "GET", DefaultPublicToken, "20240510T123000", strings.Repeat("0", 40), 400, `{"response":"API SIGNATURE ERROR"}`},
		{"unknown token", "GET", "someone-else", "20240510T123000", "", 400, `{"response":"API SIGNATURE ERROR"}`},
		{"POST", "POST", DefaultPublicToken, "20240510T123000", "", 405, "Method Not Allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sig := tt.sig
			if sig == "" {
				sig = valid(tt.date)
			}
			rec := do(t, h, tt.method, pq, tt.token, tt.date, sig)
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBodyContains) {
				t.Fatalf("got %d %s, want %d containing %q", rec.Code, rec.Body, tt.wantCode, tt.wantBodyContains)
			}
		})
	}
}

func TestSignatureCoversExactQuery(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	date := testNow.Format("20060102T150405")
	signed := "/modelbreaches?starttime=1715299200000&endtime=1715302800000"
	sent := "/modelbreaches?endtime=1715302800000&starttime=1715299200000" // same parameters, other order
	rec := do(t, h, http.MethodGet, sent, DefaultPublicToken, date, sign(DefaultPrivateToken, DefaultPublicToken, signed, date))
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "API SIGNATURE ERROR") {
		t.Fatalf("reordered query: got %d %s, want a signature error", rec.Code, rec.Body)
	}
	bare := do(t, h, http.MethodGet, "/status", DefaultPublicToken, date, sign(DefaultPrivateToken, DefaultPublicToken, "/status?", date))
	if bare.Code != http.StatusBadRequest {
		t.Fatalf("signing /status? for /status: got %d, want 400", bare.Code)
	}
}

func TestUnknownEndpointRedirectsToLogin(t *testing.T) {
	t.Parallel()
	rec := get(t, NewHandler(testOptions()), "/nosuchendpoint")
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "/login" || rec.Body.String() != "Found. Redirecting to /login" {
		t.Fatalf("got %d %q %q", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
}

func TestInputErrors(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	tests := []struct{ pq, want string }{
		{"/modelbreaches?starttime=yesterday&endtime=1715302800000", `{"modelbreaches":"INPUT ERROR"}`},
		{"/modelbreaches?starttime=1715299200000&endtime=1715302800000&includeacknowledged=yes", `{"modelbreaches":"INPUT ERROR"}`},
		{"/modelbreaches?starttime=1715299200000&endtime=1715302800000&includeacknowleged=true", `{"modelbreaches":"INPUT ERROR"}`},
		{"/modelbreaches?starttime=1715302800000&endtime=1715299200000", `{"modelbreaches":"INPUT ERROR"}`},
		{"/aianalyst/incidentevents?starttime=1&endtime=x", `{"aianalyst":"INPUT ERROR"}`},
		{"/aianalyst/incidentevents?from=2024-05-10%2000:00:00", `{"aianalyst":"INPUT ERROR"}`},
		{"/antigena?includecleared=1", `{"antigena":"INPUT ERROR"}`},
		{"/summarystatistics?eventtype=networkmodelevents&hours=2", `{"summarystatistics":"INPUT ERROR"}`},
		{"/status?fast=maybe", `{"status":"INPUT ERROR"}`},
	}
	for _, tt := range tests {
		t.Run(tt.pq, func(t *testing.T) {
			t.Parallel()
			rec := get(t, h, tt.pq)
			if rec.Code != http.StatusBadRequest || rec.Body.String() != tt.want {
				t.Fatalf("got %d %s, want 400 %s", rec.Code, rec.Body, tt.want)
			}
		})
	}
}

func windowQuery(path string, s, e time.Time, extra string) string {
	return fmt.Sprintf("%s?starttime=%d&endtime=%d%s", path, s.UnixMilli(), e.UnixMilli(), extra)
}

func TestModelBreaches(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	start, end := time.Date(2024, 5, 9, 0, 0, 0, 0, time.UTC), testNow.Add(time.Hour)
	all := h.AllEvents(config.ServiceModelBreaches, start, end)
	if len(all) < 400 {
		t.Fatalf("only %d breaches generated for 37 hours at 20/h", len(all))
	}
	type breach struct {
		PBID         int64 `json:"pbid"`
		Time         int64 `json:"time"`
		CreationTime int64 `json:"creationTime"`
		Acknowledged bool  `json:"acknowledged"`
		Model        struct {
			Then, Now map[string]any
		} `json:"model"`
		Device struct {
			DID int `json:"did"`
		} `json:"device"`
	}
	var late, ack, invisible int
	seen := map[int64]bool{}
	for _, raw := range all {
		var b breach
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		if seen[b.PBID] {
			t.Fatalf("pbid %d generated twice", b.PBID)
		}
		seen[b.PBID] = true
		if b.Model.Then == nil || b.Model.Now == nil || b.Device.DID == 0 {
			t.Fatalf("breach lacks the sample's shape: %.300s", raw)
		}
		if b.CreationTime-b.Time >= int64(5*time.Minute/time.Millisecond) {
			late++
		}
		if b.Acknowledged {
			ack++
		}
		if b.CreationTime > testNow.UnixMilli() {
			invisible++
		}
	}
	if late == 0 || ack == 0 || invisible == 0 {
		t.Fatalf("quirks missing: %d late, %d acknowledged, %d not yet visible", late, ack, invisible)
	}

	// The window is inclusive at both ends, filters on time, and hides breaches not yet created
	// and, by default, acknowledged ones; the response is sorted by time.
	var target breach
	json.Unmarshal(all[len(all)/2], &target)
	at := time.UnixMilli(target.Time)
	got := splitArray(t, get(t, h, windowQuery("/modelbreaches", at, at, "&includeacknowledged=true")).Body.Bytes())
	if len(got) == 0 || Key(config.ServiceModelBreaches, got[0]) != strconv.FormatInt(target.PBID, 10) {
		t.Fatalf("window [time, time] did not return breach %d: %d events", target.PBID, len(got))
	}

	resp := splitArray(t, get(t, h, windowQuery("/modelbreaches", start, end, "")).Body.Bytes())
	respAck := splitArray(t, get(t, h, windowQuery("/modelbreaches", start, end, "&includeacknowledged=true")).Body.Bytes())
	if want := len(all) - invisible; len(respAck) >= want+1 || len(respAck) < want-ack {
		t.Fatalf("includeacknowledged=true returned %d of %d generated (%d invisible)", len(respAck), len(all), invisible)
	}
	if len(resp) >= len(respAck) {
		t.Fatalf("acknowledged breaches not hidden by default: %d vs %d", len(resp), len(respAck))
	}
	var last int64
	for _, raw := range respAck {
		var b breach
		json.Unmarshal(raw, &b)
		if b.CreationTime > testNow.UnixMilli() {
			t.Fatalf("breach %d created at %d returned before its creation", b.PBID, b.CreationTime)
		}
		if b.Time < last {
			t.Fatal("breaches not sorted by time")
		}
		last = b.Time
	}
	if want := h.Events(config.ServiceModelBreaches, start, end); !equalEvents(want, respAck) {
		t.Fatal("Events differs from the endpoint's response")
	}
}

func equalEvents(a, b [][]byte) bool {
	return slices.EqualFunc(a, b, func(x, y []byte) bool { return bytes.Equal(x, y) })
}

func TestIncidentEvents(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	start, end := time.Date(2024, 5, 9, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 9, 12, 0, 0, 0, time.UTC)
	noPinned := splitArray(t, get(t, h, windowQuery("/aianalyst/incidentevents", start, end, "&includeacknowledged=true&includeallpinned=false")).Body.Bytes())
	withPinned := splitArray(t, get(t, h, windowQuery("/aianalyst/incidentevents", start, end, "&includeacknowledged=true")).Body.Bytes())
	if len(withPinned) <= len(noPinned) {
		t.Fatalf("pinned events outside the window not returned by default: %d vs %d", len(withPinned), len(noPinned))
	}
	if !equalEvents(h.Events(config.ServiceIncidentEvents, start, end), noPinned) {
		t.Fatal("Events differs from the endpoint's response")
	}
	type event struct {
		ID         string `json:"id"`
		CreatedAt  int64  `json:"createdAt"`
		Pinned     bool   `json:"pinned"`
		GroupScore any    `json:"groupScore"`
	}
	var sorted = true
	var prev int64
	for _, raw := range noPinned {
		var e event
		json.Unmarshal(raw, &e)
		if e.CreatedAt < start.UnixMilli() || e.CreatedAt > end.UnixMilli() {
			t.Fatalf("event %s at %d outside the window", e.ID, e.CreatedAt)
		}
		sorted = sorted && e.CreatedAt >= prev
		prev = e.CreatedAt
	}
	if sorted {
		t.Fatal("AI Analyst events came back sorted; the appliance does not sort them")
	}
	kinds := map[string]bool{}
	for _, raw := range h.AllEvents(config.ServiceIncidentEvents, h.Options().Start, h.Options().End) {
		var e event
		json.Unmarshal(raw, &e)
		kinds[fmt.Sprintf("%T", e.GroupScore)] = true
	}
	if !kinds["float64"] || !kinds["string"] || !kinds["<nil>"] {
		t.Fatalf("groupScore types seen: %v, want number, string and null", kinds)
	}
}

func TestAntigenaShapes(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	start, end := time.Date(2024, 5, 8, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 9, 0, 0, 0, 0, time.UTC)
	plain := splitArray(t, get(t, h, windowQuery("/antigena", start, end, "")).Body.Bytes())
	cleared := splitArray(t, get(t, h, windowQuery("/antigena", start, end, "&includecleared=true")).Body.Bytes())
	if len(plain) == 0 || len(cleared) <= len(plain) {
		t.Fatalf("includecleared: %d actions without, %d with", len(plain), len(cleared))
	}
	if !equalEvents(h.Events(config.ServiceAntigena, start, end), cleared) {
		t.Fatal("Events differs from the endpoint's response")
	}
	for _, tt := range []struct {
		extra string
		keys  []string
	}{
		{"&includecleared=true&fulldevicedetails=true", []string{"actions", "devices"}},
		{"&includecleared=true&includeconnections=true", []string{"actions", "connections"}},
		{"&includecleared=true&includeconnections=true&fulldevicedetails=true", []string{"actions", "connections", "devices"}},
	} {
		var obj map[string]json.RawMessage
		body := get(t, h, windowQuery("/antigena", start, end, tt.extra)).Body.Bytes()
		if err := json.Unmarshal(body, &obj); err != nil {
			t.Fatalf("%s: not an object: %v", tt.extra, err)
		}
		if got := slices.Sorted(mapsKeys(obj)); !slices.Equal(got, tt.keys) {
			t.Fatalf("%s: keys %v, want %v", tt.extra, got, tt.keys)
		}
		if !equalEvents(splitArray(t, obj["actions"]), cleared) {
			t.Fatalf("%s: actions differ from the array form", tt.extra)
		}
	}
	hist := splitArray(t, get(t, h, windowQuery("/antigena", start, end, "&includehistory=true")).Body.Bytes())
	if !bytes.Contains(hist[0], []byte(`"history":[{"family":"NETWORK"`)) {
		t.Fatalf("includehistory: %s", hist[0])
	}
}

func mapsKeys(m map[string]json.RawMessage) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	type status struct {
		Time      string                    `json:"time"`
		Probes    map[string]map[string]any `json:"probes"`
		Instances map[string]struct {
			ID     int                       `json:"id"`
			Probes map[string]map[string]any `json:"probes"`
		} `json:"instances"`
		SubnetData []any `json:"subnetData"`
	}
	var full, fast, bare status
	json.Unmarshal(get(t, h, "/status").Body.Bytes(), &full)
	json.Unmarshal(get(t, h, "/status?fast=true&includechildren=true").Body.Bytes(), &fast)
	json.Unmarshal(get(t, h, "/status?includechildren=false").Body.Bytes(), &bare)
	if full.Time != "2024-05-10 12:30" || full.SubnetData == nil || fast.SubnetData != nil {
		t.Fatalf("time %q, subnetData full %v fast %v", full.Time, full.SubnetData != nil, fast.SubnetData != nil)
	}
	if p := full.Probes["13"]; p == nil || p["error"] != true || p["id"] != nil {
		t.Fatalf("errored probe 13 without id missing: %v", full.Probes)
	}
	if len(full.Instances) != 2 || len(full.Instances["2"].Probes) != 2 || full.Instances["1"].ID != 1 {
		t.Fatalf("instances: %+v", full.Instances)
	}
	if bare.Probes != nil || bare.Instances != nil {
		t.Fatal("includechildren=false kept probes or instances")
	}
	if got := h.Events(config.ServiceStatus, time.Time{}, time.Time{}); len(got) != 1 ||
		!bytes.Equal(got[0], get(t, h, "/status?fast=true&includechildren=true").Body.Bytes()) {
		t.Fatal("Events(status) differs from the endpoint")
	}
}

func TestSummaryStatistics(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	var full map[string]any
	body := get(t, h, "/summarystatistics").Body.Bytes()
	if err := json.Unmarshal(body, &full); err != nil {
		t.Fatal(err)
	}
	if bw, _ := full["bandwidth"].([]any); len(bw) != 28 || full["devicecount"] == nil {
		t.Fatalf("summary: %.300s", body)
	}
	if got := get(t, h, "/summarystatistics?responsedata=subnets").Body.String(); !strings.HasPrefix(got, `{"subnets":`) || strings.Contains(got, ",") {
		t.Fatalf("responsedata=subnets: %s", got)
	}
	if got := h.Events(config.ServiceSummary, time.Time{}, time.Time{}); len(got) != 1 || !bytes.Equal(got[0], body) {
		t.Fatal("Events(summarystatistics) differs from the endpoint")
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	a, b := NewHandler(testOptions()), NewHandler(testOptions())
	other := testOptions()
	other.Seed = 7
	c := NewHandler(other)
	start, end := time.Date(2024, 5, 8, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 8, 12, 0, 0, 0, time.UTC)
	for _, svc := range config.Services {
		ea, eb := a.Events(svc, start, end), b.Events(svc, start, end)
		if len(ea) == 0 || !equalEvents(ea, eb) {
			t.Fatalf("%s: same options gave different data (%d events)", svc, len(ea))
		}
		if svc == config.ServiceModelBreaches && equalEvents(ea, c.Events(svc, start, end)) {
			t.Fatalf("%s: another seed gave the same data", svc)
		}
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	for _, svc := range []string{config.ServiceModelBreaches, config.ServiceIncidentEvents, config.ServiceAntigena} {
		var keys []string
		for _, raw := range h.AllEvents(svc, h.Options().Start, h.Options().End) {
			k := Key(svc, raw)
			if k == "" {
				t.Fatalf("%s: no key in %.200s", svc, raw)
			}
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if got := h.Keys(svc); !slices.Equal(got, keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
			t.Fatalf("%s: Keys gave %d keys, AllEvents %d (or duplicates)", svc, len(got), len(keys))
		}
	}
	if Key(config.ServiceStatus, []byte(`{"time":"x"}`)) != "" || Key(config.ServiceAntigena, []byte(`{"codeid":4764}`)) != "4764" {
		t.Fatal("Key: wrong snapshot or numeric key")
	}
}

func TestEventSize(t *testing.T) {
	t.Parallel()
	for _, size := range []int{1500, 3000, 20000, 100000} {
		opts := testOptions()
		opts.EventSize = size
		h := NewHandler(opts)
		evs := h.AllEvents(config.ServiceModelBreaches, opts.Start, opts.Start.Add(2*time.Hour))
		for _, ev := range evs {
			if d := len(ev) - size; d < -size/10 || d > size/10 {
				t.Fatalf("EventSize %d: event of %d bytes", size, len(ev))
			}
			if !json.Valid(ev) {
				t.Fatalf("EventSize %d: invalid JSON", size)
			}
		}
	}
}

func TestScriptedFaults(t *testing.T) {
	t.Parallel()
	slotStart, slotEnd := time.Date(2024, 5, 9, 10, 0, 0, 0, time.UTC), time.Date(2024, 5, 9, 11, 0, 0, 0, time.UTC)
	pq := windowQuery("/modelbreaches", slotStart.Add(-time.Hour), slotEnd, "&includeacknowledged=true")
	tests := []struct {
		name      string
		fault     Fault
		wantCode  int
		wantBody  string
		wantValid bool // body is complete JSON
		header    [2]string
	}{
		{"503", Fault{Kind: FaultStatus}, 503, "503 Service Unavailable", false, [2]string{}},
		{"502 with retry-after", Fault{Kind: FaultStatus, Status: 502, RetryAfter: 3 * time.Second}, 502, "502", false, [2]string{"Retry-After", "3"}},
		{"429 seconds", Fault{Kind: FaultRateLimit, RetryAfter: 7 * time.Second}, 429, "Too Many Requests", true, [2]string{"Retry-After", "7"}},
		{"429 date", Fault{Kind: FaultRateLimit, RetryAfter: time.Minute, RetryAfterDate: true}, 429, "", true, [2]string{"Retry-After", "Fri, 10 May 2024 12:31:00 GMT"}},
		{"login page", Fault{Kind: FaultLoginPage}, 200, "<title>Log In | Darktrace</title>", false, [2]string{}},
		{"redirect 403", Fault{Kind: FaultRedirect403}, 302, "Found. Redirecting to /403", false, [2]string{"Location", "/403"}},
		{"forbidden", Fault{Kind: FaultForbidden}, 403, `{"error":"Forbidden"}`, true, [2]string{}},
		{"input error", Fault{Kind: FaultInputError}, 400, `{"modelbreaches":"INPUT ERROR"}`, true, [2]string{}},
		{"signature", Fault{Kind: FaultSignatureError}, 400, `{"response":"API SIGNATURE ERROR"}`, true, [2]string{}},
		{"date", Fault{Kind: FaultDateError}, 400, `{"response":"API DATE ERROR"}`, true, [2]string{}},
		{"truncate", Fault{Kind: FaultTruncate, AfterEvents: 2}, 200, `[{"`, false, [2]string{}},
		{"stall that ends", Fault{Kind: FaultStall, Stall: time.Millisecond}, 200, `[{"`, true, [2]string{}},
		{"window match", Fault{Kind: FaultForbidden, Endpoint: "/modelbreaches", Start: slotStart, End: slotEnd}, 403, "Forbidden", true, [2]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := testOptions()
			opts.Faults.Script = []Fault{tt.fault}
			h := NewHandler(opts)
			rec := get(t, h, pq)
			if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) || json.Valid(rec.Body.Bytes()) != tt.wantValid {
				t.Fatalf("got %d valid=%v %.200s", rec.Code, json.Valid(rec.Body.Bytes()), rec.Body)
			}
			if tt.header[0] != "" && rec.Header().Get(tt.header[0]) != tt.header[1] {
				t.Fatalf("%s: %q, want %q", tt.header[0], rec.Header().Get(tt.header[0]), tt.header[1])
			}
			if h.PendingFaults() != 0 {
				t.Fatal("fault not consumed")
			}
			if again := get(t, h, pq); again.Code != 200 || !json.Valid(again.Body.Bytes()) {
				t.Fatalf("second request still faulted: %d", again.Code)
			}
		})
	}
}

func TestFaultMatching(t *testing.T) {
	t.Parallel()
	h := NewHandler(testOptions())
	s, e := time.Date(2024, 5, 9, 10, 0, 0, 0, time.UTC), time.Date(2024, 5, 9, 11, 0, 0, 0, time.UTC)
	h.AddFault(Fault{Kind: FaultForbidden, Endpoint: "/antigena", Times: 2})
	h.AddFault(Fault{Kind: FaultStatus, Endpoint: "/modelbreaches", Start: s, End: e, Times: -1})
	codes := func(pq string) int { return get(t, h, pq).Code }
	if c := codes("/status"); c != 200 {
		t.Fatalf("/status hit by another endpoint's fault: %d", c)
	}
	if c := codes(windowQuery("/modelbreaches", e, e.Add(time.Hour), "")); c != 200 {
		t.Fatalf("next slot hit by a window fault: %d", c)
	}
	for range 3 {
		if c := codes(windowQuery("/modelbreaches", s.Add(-time.Hour), e, "")); c != 503 {
			t.Fatalf("unlimited window fault: %d", c)
		}
	}
	if a, b, c := codes("/antigena"), codes("/antigena"), codes("/antigena"); a != 403 || b != 403 || c != 200 {
		t.Fatalf("Times=2: %d %d %d", a, b, c)
	}
	h.ClearFaults()
	if c := codes(windowQuery("/modelbreaches", s, e, "")); c != 200 {
		t.Fatalf("after ClearFaults: %d", c)
	}

	h.SetInputError(config.ServiceIncidentEvents, s, e, true)
	pq := windowQuery("/aianalyst/incidentevents", s, e, "&includeallpinned=false")
	for range 2 {
		if rec := get(t, h, pq); rec.Code != 400 || rec.Body.String() != `{"aianalyst":"INPUT ERROR"}` {
			t.Fatalf("persistent INPUT ERROR: %d %s", rec.Code, rec.Body)
		}
	}
	h.SetInputError(config.ServiceIncidentEvents, s, e, false)
	if c := codes(pq); c != 200 {
		t.Fatalf("INPUT ERROR not removed: %d", c)
	}
}

func TestRandomFaults(t *testing.T) {
	t.Parallel()
	opts := testOptions()
	opts.Faults = Faults{Rate: 1, Kinds: []FaultKind{FaultStatus, FaultRateLimit}}
	h := NewHandler(opts)
	for range 20 {
		if c := get(t, h, "/summarystatistics").Code; c != 503 && c != 429 {
			t.Fatalf("rate 1 request answered %d", c)
		}
	}
}

// TestOverHTTP exercises the real server: resets, stalls, counters and the concurrency
// high-water mark.
func TestOverHTTP(t *testing.T) {
	t.Parallel()
	srv := NewServer(testOptions())
	defer srv.Close()
	client := srv.Client()
	signed := func(ctx context.Context, pq string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+pq, nil)
		date := testNow.Format("20060102T150405")
		req.Header.Set("DTAPI-Token", DefaultPublicToken)
		req.Header.Set("DTAPI-Date", date)
		req.Header.Set("DTAPI-Signature", sign(DefaultPrivateToken, DefaultPublicToken, pq, date))
		return client.Do(req)
	}
	pq := windowQuery("/modelbreaches", time.Date(2024, 5, 9, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 9, 6, 0, 0, 0, time.UTC), "&includeacknowledged=true")

	srv.AddFault(Fault{Kind: FaultReset, AfterEvents: 3})
	resp, err := signed(t.Context(), pq)
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("reset fault: body read without error")
	}

	// Hold several requests in a stall and watch the high-water mark.
	const n = 4
	srv.AddFault(Fault{Kind: FaultStall, Endpoint: "/status", Times: n})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if resp, err := signed(ctx, "/status"); err == nil {
				resp.Body.Close()
			}
		})
	}
	waitFor(t, "requests in flight", func() bool { return srv.MaxInFlight() >= n })
	cancel()
	wg.Wait()
	if got := srv.MaxInFlight(); got < n {
		t.Fatalf("MaxInFlight %d, want >= %d", got, n)
	}
	if got := srv.EndpointRequests("/status"); got != n {
		t.Fatalf("EndpointRequests(/status) = %d, want %d", got, n)
	}
	if got := srv.Requests(); got != n+1 {
		t.Fatalf("Requests = %d, want %d", got, n+1)
	}
	resp, err = signed(t.Context(), pq)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !equalEvents(splitArray(t, body), srv.Events(config.ServiceModelBreaches, time.Date(2024, 5, 9, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 9, 6, 0, 0, 0, time.UTC))) {
		t.Fatalf("clean request after faults: %v", err)
	}
}

func TestTLSServer(t *testing.T) {
	t.Parallel()
	srv := NewTLSServer(testOptions())
	defer srv.Close()
	if srv.Certificate() == nil || !strings.HasPrefix(srv.URL, "https://") {
		t.Fatal("TLS server without certificate")
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/status", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unsigned request: %d", resp.StatusCode)
	}
}

func TestServerCloseReleasesStalls(t *testing.T) {
	t.Parallel()
	srv := NewServer(testOptions())
	srv.AddFault(Fault{Kind: FaultStall})
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/status", nil)
		date := testNow.Format("20060102T150405")
		req.Header.Set("DTAPI-Token", DefaultPublicToken)
		req.Header.Set("DTAPI-Date", date)
		req.Header.Set("DTAPI-Signature", sign(DefaultPrivateToken, DefaultPublicToken, "/status", date))
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, "the stalled request", func() bool { return srv.MaxInFlight() >= 1 })
	srv.Close() // must not block on the stalled request
	<-done
}

func TestSelfSignedCert(t *testing.T) {
	t.Parallel()
	cert, certPEM, err := SelfSignedCert("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) == 0 || !bytes.Contains(certPEM, []byte("BEGIN CERTIFICATE")) {
		t.Fatal("empty certificate")
	}
	if _, _, err := SelfSignedCert(); !errors.Is(err, ErrNoHosts) {
		t.Fatalf("no hosts: %v", err)
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"starttime=1715299200000&endtime=1715302800000&includeacknowledged=true",
		"starttime=1&endtime=2&includeacknowledged=true&includeallpinned=false",
		"from=2024-05-10%2000:00:00&to=2024-05-10T01:00:00",
		"fast=true&includechildren=false&responsedata=subnets",
		"hours=2", "starttime=x", "&&=&", "includecleared=TRUE",
	} {
		f.Add(s)
	}
	now := testNow
	f.Fuzz(func(t *testing.T, raw string) {
		for svc := range params {
			q, err := parseQuery(svc, raw, now)
			if err != nil {
				continue
			}
			if _, windowed := windowDefaults[svc]; windowed && (q.start.IsZero() || q.end.Before(q.start)) {
				t.Fatalf("%s %q: window %v..%v", svc, raw, q.start, q.end)
			}
		}
	})
}

func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"20230101T120000", "2023-01-01T12:00:00", "2023-01-01 12:00:00",
		"Mon, 01 Jan 2023 12:00:00", "Mon, 01 Jan 2023 12:00:00 GMT", "Mon Jan  1 12:00:00 2023",
		"2024-05-01T12:00:00.123456+00:00", "2021-01-01T23:00:00Z", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, ok := parseDate(s); ok && d.IsZero() && strings.TrimSpace(s) == "" {
			t.Fatalf("empty date accepted")
		}
	})
}

func FuzzKey(f *testing.F) {
	for _, name := range []string{"modelbreaches-sekoia.json", "aianalyst-incidentevents-elastic.json", "antigena-apiguide6-cleaned.json"} {
		b, _ := samples.ReadFile("testdata/" + name)
		var raws []json.RawMessage
		json.Unmarshal(b, &raws)
		f.Add([]byte(raws[0]))
	}
	f.Add([]byte(`{"pbid":"x"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, svc := range config.Services {
			k := Key(svc, raw)
			if k != "" && !json.Valid(raw) {
				t.Fatalf("key %q from invalid JSON", k)
			}
		}
	})
}

func BenchmarkGenerateHour(b *testing.B) {
	opts := testOptions()
	opts.EventsPerHour = map[string]float64{config.ServiceModelBreaches: 1000}
	h := NewHandler(opts)
	rd := &renderer{h: h}
	var n int64
	for i := 0; b.Loop(); i++ {
		for _, r := range h.genHour(config.ServiceModelBreaches, 477000+int64(i)) {
			n += int64(len(rd.render(config.ServiceModelBreaches, &r, false)))
		}
	}
	b.SetBytes(n / int64(b.N))
}
