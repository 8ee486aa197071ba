package darktracetest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// clock is a settable appliance base clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// getAt sends a signed GET dated date (the client's clock).
func getAt(t testing.TB, h http.Handler, pathQuery string, date time.Time) *httptest.ResponseRecorder {
	t.Helper()
	d := date.UTC().Format("20060102T150405")
	return do(t, h, http.MethodGet, pathQuery, DefaultPublicToken, d, sign(DefaultPrivateToken, DefaultPublicToken, pathQuery, d))
}

// untidyOptions is testOptions with a settable clock and the given untidiness.
func untidyOptions(c *clock, u Untidiness) Options {
	opts := testOptions()
	opts.Now = c.now
	opts.Untidy = u
	return opts
}

// fields decodes the top-level members of an event that the tests look at.
type fields struct {
	PBID         int64       `json:"pbid"`
	Time         int64       `json:"time"`
	CreationTime int64       `json:"creationTime"`
	ID           string      `json:"id"`
	CreatedAt    int64       `json:"createdAt"`
	CodeID       int64       `json:"codeid"`
	Start        int64       `json:"start"`
	Expires      int64       `json:"expires"`
	Updated      json.Number `json:"updated"`
	Cleared      bool        `json:"cleared"`
	History      []struct {
		Action string `json:"action"`
		Time   int64  `json:"time"`
	} `json:"history"`
}

func decode(t testing.TB, raw []byte) fields {
	t.Helper()
	var f fields
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%v: %.200s", err, raw)
	}
	return f
}

func ms(t time.Time) int64 { return t.UnixMilli() }

// TestLateBreaches: with LateBreachShare, breaches are created up to MaxBreachDelay after their
// time (hours, not the tidy 5–60 minutes), are invisible until then, are found by creationtime=true
// windows on their creation, and every other generated field is unchanged.
func TestLateBreaches(t *testing.T) {
	t.Parallel()
	c := &clock{t: testNow}
	h := NewHandler(untidyOptions(c, Untidiness{LateBreachShare: 0.3, MaxBreachDelay: 3 * time.Hour}))
	tidy := NewHandler(testOptions())
	start, end := time.Date(2024, 5, 8, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 10, 6, 0, 0, 0, time.UTC)
	if !slices.Equal(h.KeysIn(config.ServiceModelBreaches, start, end), tidy.KeysIn(config.ServiceModelBreaches, start, end)) {
		t.Fatal("late breaches changed the set of breaches")
	}
	var late *fields
	var hoursLate int
	for _, raw := range h.AllEvents(config.ServiceModelBreaches, start, end) {
		b := decode(t, raw)
		d := time.Duration(b.CreationTime-b.Time) * time.Millisecond
		if d > 3*time.Hour || d < 0 {
			t.Fatalf("breach %d created %v after its time, beyond MaxBreachDelay", b.PBID, d)
		}
		if d > time.Hour {
			hoursLate++
			if late == nil && d > 2*time.Hour {
				late = &b
			}
		}
	}
	for _, raw := range tidy.AllEvents(config.ServiceModelBreaches, start, end) {
		if b := decode(t, raw); b.CreationTime-b.Time > hourMs {
			t.Fatalf("tidy fake: breach %d created more than an hour late", b.PBID)
		}
	}
	if hoursLate < 50 || late == nil {
		t.Fatalf("only %d breaches created more than an hour late (of about 30%% of 1080)", hoursLate)
	}
	slot := windowQuery("/modelbreaches", time.UnixMilli(late.Time).Truncate(time.Hour), time.UnixMilli(late.Time).Truncate(time.Hour).Add(time.Hour), "&includeacknowledged=true")
	has := func(body []byte) bool {
		for _, raw := range splitArray(t, body) {
			if decode(t, raw).PBID == late.PBID {
				return true
			}
		}
		return false
	}
	// Just before its creation the breach is in no response; from then on it is.
	c.set(time.UnixMilli(late.CreationTime - 1))
	if rec := getAt(t, h, slot, c.now()); rec.Code != 200 || has(rec.Body.Bytes()) {
		t.Fatalf("breach %d visible before its creationTime (%d)", late.PBID, rec.Code)
	}
	c.set(time.UnixMilli(late.CreationTime))
	if rec := getAt(t, h, slot, c.now()); !has(rec.Body.Bytes()) {
		t.Fatalf("breach %d not returned once created", late.PBID)
	}
	// A window on creation: found by creationtime=true around its creationTime, not by time.
	around := time.UnixMilli(late.CreationTime).Truncate(time.Minute)
	byTime := windowQuery("/modelbreaches", around, around.Add(time.Minute), "&includeacknowledged=true")
	if has(getAt(t, h, byTime, c.now()).Body.Bytes()) {
		t.Fatal("a window on time returned a breach whose time is hours before it")
	}
	if !has(getAt(t, h, byTime+"&creationtime=true", c.now()).Body.Bytes()) {
		t.Fatal("a creationtime=true window did not return the breach created in it")
	}
	// Due counts the late breach only once it exists.
	dueKeys := func(at time.Time) []string {
		var keys []string
		for _, e := range h.Due(config.ServiceModelBreaches, start, end, at) {
			keys = append(keys, e.Key)
		}
		return keys
	}
	k := strconv.FormatInt(late.PBID, 10)
	if slices.Contains(dueKeys(time.UnixMilli(late.CreationTime-1)), k) || !slices.Contains(dueKeys(time.UnixMilli(late.CreationTime)), k) {
		t.Fatal("Due does not follow the breach's creationTime")
	}
}

// TestIncidentDelay: AI Analyst events become visible only after createdAt; with the window on
// createdAt (the default) a window fetched right after its end misses them and a later fetch of
// the same window has them; with the window on visibility, the window in which they appeared has
// them.
func TestIncidentDelay(t *testing.T) {
	t.Parallel()
	const delay = 5 * time.Minute
	slotStart := time.Date(2024, 5, 9, 10, 0, 0, 0, time.UTC)
	slotEnd := slotStart.Add(time.Hour)
	for _, win := range []WindowField{WindowOnEventTime, WindowOnChangeTime} {
		t.Run(win.String(), func(t *testing.T) {
			t.Parallel()
			c := &clock{t: slotEnd}
			opts := untidyOptions(c, Untidiness{IncidentDelay: delay, IncidentWindow: win})
			opts.EventsPerHour = map[string]float64{config.ServiceIncidentEvents: 120}
			h := NewHandler(opts)
			all := h.KeysIn(config.ServiceIncidentEvents, slotStart, slotEnd)
			ids := func(from, to time.Time) []string {
				var out []string
				for _, raw := range splitArray(t, getAt(t, h, windowQuery("/aianalyst/incidentevents", from, to, "&includeacknowledged=true&includeallpinned=false"), c.now()).Body.Bytes()) {
					if f := decode(t, raw); f.CreatedAt >= ms(slotStart) && f.CreatedAt < ms(slotEnd) {
						out = append(out, f.ID)
					}
				}
				slices.Sort(out)
				return out
			}
			// The last minutes' events are not visible yet right after the slot's end.
			notYet := 0
			for _, e := range h.Due(config.ServiceIncidentEvents, slotStart, slotEnd, c.now().Add(delay)) {
				if e.VisibleAt.After(c.now()) {
					notYet++
				}
				if d := e.VisibleAt.Sub(e.Time); d <= 0 || d > delay {
					t.Fatalf("event %s visible %v after createdAt, want (0, %v]", e.Key, d, delay)
				}
			}
			if notYet == 0 || len(all) < 3 {
				t.Fatalf("%d events, %d of them not visible at the slot's end: the test needs some", len(all), notYet)
			}
			right := ids(slotStart, slotEnd)
			if len(right) != len(all)-notYet {
				t.Fatalf("right after the end: %d events, want the %d visible ones", len(right), len(all)-notYet)
			}
			if n := len(h.Due(config.ServiceIncidentEvents, slotStart, slotEnd, c.now())); n != len(right) {
				t.Fatalf("Due at the slot's end has %d events, the response %d", n, len(right))
			}
			c.set(slotEnd.Add(delay))
			switch win {
			case WindowOnEventTime:
				if got := ids(slotStart, slotEnd); !slices.Equal(got, all) {
					t.Fatalf("refetched window: %d events, want %d", len(got), len(all))
				}
			case WindowOnChangeTime:
				if got := ids(slotStart, slotEnd); len(got) != len(right) {
					t.Fatalf("window on visibility, refetched: %d events, want the %d that appeared in it", len(got), len(right))
				}
				if got := ids(slotEnd.Add(time.Millisecond), slotEnd.Add(delay)); len(got) != notYet {
					t.Fatalf("the next window on visibility has %d of the slot's events, want the %d late ones", len(got), notYet)
				}
			}
		})
	}
}

// TestActionLifecycle: Antigena actions are created, extended, cleared and expire; every response
// shows each action as it is at the appliance's clock, TruthKey reads the same state Due lists
// last, history grows with the changes, cleared actions need includecleared, and the window
// filters on start or on the current updated time.
func TestActionLifecycle(t *testing.T) {
	t.Parallel()
	c := &clock{t: testNow}
	h := NewHandler(untidyOptions(c, Untidiness{ActionLifecycle: true}))
	start, end := time.Date(2024, 5, 8, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 10, 0, 0, 0, 0, time.UTC)
	recs := h.allRecs(config.ServiceAntigena, start, end)
	var ext, clr *rec
	states := map[string]int{}
	for i := range recs {
		r := &recs[i]
		for _, tr := range h.transitions(r, ms(testNow)) {
			states[tr.state]++
		}
		if ext == nil && r.extendAt != 0 && r.clearAt == 0 && r.newExpires < ms(testNow) {
			ext = r
		}
		if clr == nil && r.clearAt != 0 {
			clr = r
		}
	}
	for _, st := range []string{StateCreated, StateExtended, StateCleared, StateExpired} {
		if states[st] == 0 {
			t.Fatalf("no action reached state %s: %v", st, states)
		}
	}
	if ext == nil || clr == nil {
		t.Fatal("no extended-then-expired or cleared action")
	}
	find := func(r *rec, extra string) (fields, string, bool) {
		from := time.UnixMilli(r.t).Truncate(time.Hour)
		for _, raw := range splitArray(t, getAt(t, h, windowQuery("/antigena", from, from.Add(time.Hour), extra), c.now()).Body.Bytes()) {
			if f := decode(t, raw); f.CodeID == r.id {
				return f, TruthKey(config.ServiceAntigena, raw), true
			}
		}
		return fields{}, "", false
	}
	id := strconv.FormatInt(ext.id, 10)
	for _, step := range []struct {
		at      int64
		state   string
		expires int64
		updated int64
		hist    []string
	}{
		{ext.t, StateCreated, ext.expires, ext.t, []string{"created"}},
		{ext.extendAt - 1, StateCreated, ext.expires, ext.t, []string{"created"}},
		{ext.extendAt, StateExtended, ext.newExpires, ext.extendAt, []string{"created", "extended"}},
		{ext.newExpires, StateExpired, ext.newExpires, ext.newExpires, []string{"created", "extended", "expired"}},
	} {
		c.set(time.UnixMilli(step.at))
		f, key, ok := find(ext, "&includecleared=true&includehistory=true")
		if !ok {
			t.Fatalf("at %d: action %s missing", step.at, id)
		}
		upd, _ := f.Updated.Int64()
		if key != id+":"+step.state || f.Expires != step.expires || upd != step.updated || f.Cleared {
			t.Fatalf("at %d: key %s expires %d updated %d cleared %v, want %s:%s %d %d", step.at, key, f.Expires, upd, f.Cleared, id, step.state, step.expires, step.updated)
		}
		var hist []string
		for _, e := range f.History {
			hist = append(hist, e.Action)
		}
		if !slices.Equal(hist, step.hist) {
			t.Fatalf("at %d: history %v, want %v", step.at, hist, step.hist)
		}
		due := h.Due(config.ServiceAntigena, time.UnixMilli(ext.t), time.UnixMilli(ext.t+1), c.now())
		if len(due) != len(step.hist) || due[len(due)-1].Key != key || due[len(due)-1].Updated.UnixMilli() != upd {
			t.Fatalf("at %d: Due %+v, want %d states ending with %s", step.at, due, len(step.hist), key)
		}
	}
	// Cleared: hidden without includecleared from its clearing on.
	c.set(time.UnixMilli(clr.clearAt - 1))
	if _, key, ok := find(clr, ""); !ok || strings.HasSuffix(key, StateCleared) {
		t.Fatalf("before clearing: found %v as %s", ok, key)
	}
	c.set(time.UnixMilli(clr.clearAt))
	if _, _, ok := find(clr, ""); ok {
		t.Fatal("a cleared action was returned without includecleared")
	}
	if f, key, ok := find(clr, "&includecleared=true"); !ok || !f.Cleared || key != strconv.FormatInt(clr.id, 10)+":"+StateCleared {
		t.Fatalf("with includecleared: found %v as %s", ok, key)
	}
	// Every action rendered now reads as the last state Due lists for it.
	c.set(testNow)
	last := map[string]string{}
	for _, e := range h.Due(config.ServiceAntigena, start, end, testNow) {
		last[strings.SplitN(e.Key, ":", 2)[0]] = e.Key
	}
	n := 0
	for _, raw := range h.AllEvents(config.ServiceAntigena, start, end) {
		if k := TruthKey(config.ServiceAntigena, raw); k != last[Key(config.ServiceAntigena, raw)] {
			t.Fatalf("rendered as %s, Due ends with %s", k, last[Key(config.ServiceAntigena, raw)])
		}
		n++
	}
	if n != len(last) {
		t.Fatalf("%d actions rendered, %d in Due", n, len(last))
	}
}

// TestActionWindows: with the window on change, an action whose start is outside the window is
// returned by the window holding its current updated time; with the window on event time, only by
// its start's. Without a window, /antigena returns current actions and those that expired in the
// last 14 days.
func TestActionWindows(t *testing.T) {
	t.Parallel()
	c := &clock{t: testNow}
	byStart := NewHandler(untidyOptions(c, Untidiness{ActionLifecycle: true}))
	byChange := NewHandler(untidyOptions(c, Untidiness{ActionLifecycle: true, ActionWindow: WindowOnChangeTime}))
	recs := byStart.allRecs(config.ServiceAntigena, time.Date(2024, 5, 9, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 10, 0, 0, 0, 0, time.UTC))
	var r *rec
	for i := range recs {
		if recs[i].extendAt != 0 && recs[i].extendAt-recs[i].t > hourMs && recs[i].clearAt == 0 && recs[i].newExpires > ms(testNow) {
			r = &recs[i]
			break
		}
	}
	if r == nil {
		t.Fatal("no action extended more than an hour after its start and still current")
	}
	has := func(h *Handler, q string) bool {
		for _, raw := range splitArray(t, getAt(t, h, q, c.now()).Body.Bytes()) {
			if decode(t, raw).CodeID == r.id {
				return true
			}
		}
		return false
	}
	updWin := windowQuery("/antigena", time.UnixMilli(r.extendAt).Add(-time.Minute), time.UnixMilli(r.extendAt).Add(time.Minute), "&includecleared=true")
	startWin := windowQuery("/antigena", time.UnixMilli(r.t).Add(-time.Minute), time.UnixMilli(r.t).Add(time.Minute), "&includecleared=true")
	if !has(byChange, updWin) || has(byChange, startWin) {
		t.Fatal("window on change: the action is not in the window of its updated time only")
	}
	if has(byStart, updWin) || !has(byStart, startWin) {
		t.Fatal("window on event time: the action is not in the window of its start only")
	}
	// No window: current (expires in the future) and expired within 14 days; not older ones.
	old := NewHandler(Options{Seed: 42, Start: testNow.Add(-20 * 24 * time.Hour), End: testNow.Add(time.Hour), Now: c.now,
		EventsPerHour: map[string]float64{config.ServiceAntigena: 2}, Untidy: Untidiness{ActionLifecycle: true}})
	var current, recent, ancient int
	for _, raw := range splitArray(t, getAt(t, old, "/antigena?includecleared=true", c.now()).Body.Bytes()) {
		f := decode(t, raw)
		switch {
		case f.Expires > ms(testNow):
			current++
		case f.Expires >= ms(testNow.Add(-14*24*time.Hour)):
			recent++
		default:
			ancient++
		}
	}
	want := 0
	for _, r := range old.allRecs(config.ServiceAntigena, testNow.Add(-20*24*time.Hour), testNow.Add(time.Hour)) {
		if r.t <= ms(testNow) && old.current(&r, ms(testNow)).expires >= ms(testNow.Add(-14*24*time.Hour)) {
			want++
		}
	}
	if current == 0 || recent == 0 || ancient != 0 || current+recent != want {
		t.Fatalf("no window: %d current, %d expired within 14 days, %d older; want %d in all", current, recent, ancient, want)
	}
}

// TestClockOffset: the appliance's clock runs ClockOffset from Options.Now: its Date header shows
// it, and DTAPI-Date is checked against it (API DATE ERROR beyond 30 minutes, either way).
func TestClockOffset(t *testing.T) {
	t.Parallel()
	c := &clock{t: testNow}
	h := NewHandler(untidyOptions(c, Untidiness{ClockOffset: 40 * time.Minute}))
	appliance := testNow.Add(40 * time.Minute)
	tests := []struct {
		date     time.Time
		wantCode int
	}{
		{testNow, 400},                          // the host's clock: 40 minutes behind
		{appliance.Add(-29 * time.Minute), 200}, // within 30 minutes of the appliance
		{appliance.Add(31 * time.Minute), 400},  // 31 minutes ahead of it
		{appliance, 200},
	}
	for _, tt := range tests {
		rec := getAt(t, h, "/status", tt.date)
		if rec.Code != tt.wantCode {
			t.Fatalf("dated %v: %d, want %d", tt.date, rec.Code, tt.wantCode)
		}
		if tt.wantCode == 400 && strings.TrimSpace(rec.Body.String()) != `{"response":"API DATE ERROR"}` {
			t.Fatalf("dated %v: body %s", tt.date, rec.Body)
		}
		if got := rec.Header().Get("Date"); got != appliance.Format(http.TimeFormat) {
			t.Fatalf("Date header %q, want the appliance's clock %q", got, appliance.Format(http.TimeFormat))
		}
	}
	// The tidy fake dates its answers by its own (frozen) clock too.
	if got := get(t, NewHandler(testOptions()), "/status").Header().Get("Date"); got != testNow.Format(http.TimeFormat) {
		t.Fatalf("tidy Date header %q", got)
	}
}

// TestFaultSpans: a fault with For fails every matching request for that long on the appliance's
// clock from its first hit, then is dropped; the new kinds answer as a real appliance does.
func TestFaultSpans(t *testing.T) {
	t.Parallel()
	tests := []struct {
		spec     string
		wantCode int
		wantBody string
		header   [2]string
	}{
		{"date_error,for=10m,service=modelbreaches", 400, `{"response":"API DATE ERROR"}`, [2]string{}},
		{"signature_error,for=10m,service=modelbreaches", 400, `{"response":"API SIGNATURE ERROR"}`, [2]string{}},
		{"login_redirect,for=10m,service=modelbreaches", 302, "Found. Redirecting to /login", [2]string{"Location", "/login"}},
		{"maintenance,for=10m,retry_after=30s,service=modelbreaches", 503, "<title>Maintenance | Darktrace</title>", [2]string{"Retry-After", "30"}},
		{"maintenance,status=502,for=10m,service=modelbreaches", 502, "being updated", [2]string{"Content-Type", "text/html; charset=utf-8"}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			t.Parallel()
			f, err := ParseFault(tt.spec)
			if err != nil || f.For != 10*time.Minute {
				t.Fatalf("ParseFault: %+v, %v", f, err)
			}
			c := &clock{t: testNow}
			opts := untidyOptions(c, Untidiness{})
			opts.Faults.Script = []Fault{f}
			h := NewHandler(opts)
			if rec := getAt(t, h, "/status", c.now()); rec.Code != 200 {
				t.Fatalf("a request of another endpoint got %d", rec.Code)
			}
			q := windowQuery("/modelbreaches", testNow.Add(-2*time.Hour), testNow.Add(-time.Hour), "")
			for _, after := range []time.Duration{0, time.Minute, 10*time.Minute - time.Millisecond} {
				c.set(testNow.Add(after))
				rec := getAt(t, h, q, c.now())
				if rec.Code != tt.wantCode || !strings.Contains(rec.Body.String(), tt.wantBody) {
					t.Fatalf("+%v: %d %.200s", after, rec.Code, rec.Body)
				}
				if tt.header[0] != "" && rec.Header().Get(tt.header[0]) != tt.header[1] {
					t.Fatalf("+%v: %s %q, want %q", after, tt.header[0], rec.Header().Get(tt.header[0]), tt.header[1])
				}
				if h.PendingFaults() != 1 {
					t.Fatalf("+%v: %d pending faults during the span", after, h.PendingFaults())
				}
			}
			c.set(testNow.Add(10 * time.Minute))
			if h.PendingFaults() != 0 {
				t.Fatal("the fault is still pending after its span")
			}
			if rec := getAt(t, h, q, c.now()); rec.Code != 200 || !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("after the span: %d", rec.Code)
			}
		})
	}
	if _, err := ParseFault("date_error,for=-1m"); err == nil {
		t.Fatal("a negative span was accepted")
	}
}

// TestRealistic: Realistic turns every knob on at RealisticUntidiness's values; fields set
// explicitly keep their value.
func TestRealistic(t *testing.T) {
	t.Parallel()
	opts := testOptions()
	opts.Realistic = true
	if got := NewHandler(opts).Options().Untidy; got != RealisticUntidiness() {
		t.Fatalf("Realistic gives %+v, want %+v", got, RealisticUntidiness())
	}
	opts.Untidy = Untidiness{IncidentDelay: time.Minute, IncidentWindow: WindowOnChangeTime}
	got := NewHandler(opts).Options().Untidy
	want := RealisticUntidiness()
	want.IncidentDelay, want.IncidentWindow = time.Minute, WindowOnChangeTime
	if got != want {
		t.Fatalf("Realistic with overrides gives %+v, want %+v", got, want)
	}
	if u := NewHandler(testOptions()).Options().Untidy; u != (Untidiness{MaxBreachDelay: 3 * time.Hour}) {
		t.Fatalf("the default is not tidy: %+v", u)
	}
}

// TestControlDue: /_dtfleet/truth/due answers Due for the service, range and appliance time.
func TestControlDue(t *testing.T) {
	t.Parallel()
	c := &clock{t: testNow}
	h := NewHandler(untidyOptions(c, RealisticUntidiness()))
	srv := httptest.NewServer(h.WithControl())
	defer srv.Close()
	start, end := time.Date(2024, 5, 9, 0, 0, 0, 0, time.UTC), time.Date(2024, 5, 10, 0, 0, 0, 0, time.UTC)
	for _, svc := range []string{config.ServiceModelBreaches, config.ServiceIncidentEvents, config.ServiceAntigena} {
		for _, at := range []time.Time{start.Add(6 * time.Hour), testNow} {
			resp, err := http.Get(srv.URL + "/_dtfleet/truth/due?service=" + svc + "&start=" + start.Format(time.RFC3339) +
				"&end=" + end.Format(time.RFC3339) + "&at=" + strconv.FormatInt(at.UnixMilli(), 10))
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Count  int          `json:"count"`
				Events []TruthEvent `json:"events"`
			}
			err = json.NewDecoder(resp.Body).Decode(&got)
			resp.Body.Close()
			want := h.Due(svc, start, end, at)
			if err != nil || got.Count != len(want) || len(got.Events) != len(want) || len(want) == 0 {
				t.Fatalf("%s at %v: %d events (%v), want %d", svc, at, got.Count, err, len(want))
			}
			for i := range want {
				if got.Events[i].Key != want[i].Key || !got.Events[i].VisibleAt.Equal(want[i].VisibleAt) {
					t.Fatalf("%s: event %d is %+v, want %+v", svc, i, got.Events[i], want[i])
				}
			}
		}
	}
	resp, err := http.Get(srv.URL + "/_dtfleet/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats struct {
		Now    time.Time      `json:"appliance_now"`
		Untidy map[string]any `json:"untidy"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil || !stats.Now.Equal(testNow.Add(90*time.Second)) || stats.Untidy["action_lifecycle"] != true {
		t.Fatalf("stats: %+v, %v", stats, err)
	}
}
