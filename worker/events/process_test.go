package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

var testPoll = time.UnixMilli(1714564800000).UTC()

const testPollMs = 1714564800000

// processOne runs one raw event through a new Processor and returns its events.
func processOne(t *testing.T, opts Options, raw string) ([]Event, error) {
	t.Helper()
	p, err := NewProcessor(opts)
	if err != nil {
		t.Fatalf("NewProcessor: %v", err)
	}
	var evs []Event
	err = p.Process([]byte(raw), testPoll, func(ev Event) error {
		evs = append(evs, ev)
		return nil
	})
	return evs, err
}

func TestProcessKeysAndTimes(t *testing.T) {
	t.Parallel()
	fallback := func(service, raw string) string {
		return FallbackKey(service, []byte(raw))
	}
	tests := []struct {
		name         string
		service      string
		raw          string
		wantKey      string
		wantTime     int64
		fallbackKey  bool
		fallbackTime bool
	}{
		{name: "breach", service: config.ServiceModelBreaches,
			raw: `{"pbid":25808,"time":1687774142000}`, wantKey: "mb:25808", wantTime: 1687774142000},
		{name: "breach fields late, after nested values", service: config.ServiceModelBreaches,
			raw:     `{"model":{"pbid":1,"time":2,"s":"}\"{"},"device":[{"x":"]"}],"pbid":7,"time":1657748808000}`,
			wantKey: "mb:7", wantTime: 1657748808000},
		{name: "breach pbid as string", service: config.ServiceModelBreaches,
			raw: `{"pbid":"0042","time":"1687774142000"}`, wantKey: "mb:42", wantTime: 1687774142000},
		{name: "breach first occurrence wins", service: config.ServiceModelBreaches,
			raw: `{"pbid":1,"pbid":2,"time":3}`, wantKey: "mb:1", wantTime: 3},
		{name: "breach with whitespace", service: config.ServiceModelBreaches,
			raw: "{ \"pbid\" : 5 ,\n \"time\" : 6 }", wantKey: "mb:5", wantTime: 6},
		{name: "breach float time truncated", service: config.ServiceModelBreaches,
			raw: `{"pbid":5,"time":1687774142000.9}`, wantKey: "mb:5", wantTime: 1687774142000},
		{name: "breach without time", service: config.ServiceModelBreaches,
			raw: `{"pbid":5}`, wantKey: "mb:5", wantTime: testPollMs, fallbackTime: true},
		{name: "breach with null time", service: config.ServiceModelBreaches,
			raw: `{"pbid":5,"time":null}`, wantKey: "mb:5", wantTime: testPollMs, fallbackTime: true},
		{name: "breach with date string time", service: config.ServiceModelBreaches,
			raw: `{"pbid":5,"time":"2023-06-26 10:09:02"}`, wantKey: "mb:5", wantTime: testPollMs, fallbackTime: true},
		{name: "breach without pbid", service: config.ServiceModelBreaches,
			raw: `{"time":6}`, wantKey: fallback(config.ServiceModelBreaches, `{"time":6}`), wantTime: 6, fallbackKey: true},
		{name: "breach with float pbid", service: config.ServiceModelBreaches,
			raw: `{"pbid":1.5,"time":6}`, wantKey: fallback(config.ServiceModelBreaches, `{"pbid":1.5,"time":6}`), wantTime: 6, fallbackKey: true},
		{name: "breach that is not an object", service: config.ServiceModelBreaches,
			raw: `[1,2]`, wantKey: fallback(config.ServiceModelBreaches, `[1,2]`), wantTime: testPollMs, fallbackKey: true, fallbackTime: true},
		{name: "incident event", service: config.ServiceIncidentEvents,
			raw:     `{"id":"a3f275f1-8597-4473-aca0-7b886b45a01c","createdAt":1694165744637,"groupScore":"72.9"}`,
			wantKey: "ai:a3f275f1-8597-4473-aca0-7b886b45a01c", wantTime: 1694165744637},
		{name: "incident event id with escape", service: config.ServiceIncidentEvents,
			raw: `{"createdAt":1,"id":"ab\u0063"}`, wantKey: "ai:abc", wantTime: 1},
		{name: "incident event empty id", service: config.ServiceIncidentEvents,
			raw: `{"id":"","createdAt":1}`, wantKey: fallback(config.ServiceIncidentEvents, `{"id":"","createdAt":1}`), wantTime: 1, fallbackKey: true},
		{name: "incident event id with space", service: config.ServiceIncidentEvents,
			raw: `{"id":"a b","createdAt":1}`, wantKey: fallback(config.ServiceIncidentEvents, `{"id":"a b","createdAt":1}`), wantTime: 1, fallbackKey: true},
		{name: "incident event null id", service: config.ServiceIncidentEvents,
			raw: `{"id":null,"createdAt":1}`, wantKey: fallback(config.ServiceIncidentEvents, `{"id":null,"createdAt":1}`), wantTime: 1, fallbackKey: true},
		{name: "action start only", service: config.ServiceAntigena,
			raw:     `{"codeid":4764,"start":1582038124000,"expires":1582041724000,"blocked":true,"active":true,"cleared":false}`,
			wantKey: "ag:4764:" + actionState(nil, []byte(`1582041724000`), []byte(`true`), []byte(`false`), []byte(`true`)), wantTime: 1582038124000},
		{name: "action updated later than start", service: config.ServiceAntigena,
			raw:     `{"codeid":1,"start":1000,"updated":"2000"}`,
			wantKey: "ag:1:" + actionState([]byte(`2000`), nil, nil, nil, nil), wantTime: 2000},
		{name: "action updated earlier than start", service: config.ServiceAntigena,
			raw:     `{"codeid":1,"start":3000,"updated":2000}`,
			wantKey: "ag:1:" + actionState([]byte(`2000`), nil, nil, nil, nil), wantTime: 3000},
		{name: "action without start", service: config.ServiceAntigena,
			raw:     `{"codeid":1,"updated":2000}`,
			wantKey: "ag:1:" + actionState([]byte(`2000`), nil, nil, nil, nil), wantTime: 2000},
		{name: "action without times", service: config.ServiceAntigena,
			raw:     `{"codeid":1}`,
			wantKey: "ag:1:" + actionState(nil, nil, nil, nil, nil), wantTime: testPollMs, fallbackTime: true},
		{name: "action without codeid", service: config.ServiceAntigena,
			raw: `{"start":5}`, wantKey: fallback(config.ServiceAntigena, `{"start":5}`), wantTime: 5, fallbackKey: true},
		{name: "summary", service: config.ServiceSummary,
			raw: `{"usercredentialcount":82}`, wantKey: "ss:1714564800000", wantTime: testPollMs},
		{name: "status unflattened", service: config.ServiceStatus,
			raw: `{"time":"2023-12-08 10:21","probes":{"1":{}}}`, wantKey: "st:1714564800000:master", wantTime: testPollMs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			evs, err := processOne(t, Options{Service: tc.service}, tc.raw)
			if err != nil {
				t.Fatalf("Process: %v", err)
			}
			if len(evs) != 1 {
				t.Fatalf("got %d events, want 1", len(evs))
			}
			if evs[0].Key != tc.wantKey || evs[0].Time != tc.wantTime {
				t.Errorf("key, time = %q, %d; want %q, %d", evs[0].Key, evs[0].Time, tc.wantKey, tc.wantTime)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, []byte(tc.raw)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(evs[0].Data, compact.Bytes()) {
				t.Errorf("data = %s, want %s", evs[0].Data, compact.Bytes())
			}
			// Snapshots are dated at the poll time by design, not as a fallback.
			snapshot := tc.service == config.ServiceSummary || tc.service == config.ServiceStatus
			if strings.Contains(evs[0].Key, ":sha256:") != tc.fallbackKey || !snapshot && (evs[0].Time == testPollMs) != tc.fallbackTime {
				t.Errorf("key %q, time %d: want fallback key %v, fallback time %v", evs[0].Key, evs[0].Time, tc.fallbackKey, tc.fallbackTime)
			}
		})
	}
}

func TestProcessFallbackKeyIsLogged(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	p, err := NewProcessor(Options{Service: config.ServiceModelBreaches, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	raw := `{"time":6,"secret":"do-not-log"}`
	if err := p.Process([]byte(raw), testPoll, func(Event) error { return nil }); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "fallback key") || !strings.Contains(out, FallbackKey(config.ServiceModelBreaches, []byte(raw))) {
		t.Errorf("log = %q, want a fallback key warning naming the key", out)
	}
	if strings.Contains(out, "do-not-log") {
		t.Errorf("log = %q, must not contain the event", out)
	}
}

func TestFallbackKey(t *testing.T) {
	t.Parallel()
	a := FallbackKey(config.ServiceModelBreaches, []byte(`{"a": 1}`))
	b := FallbackKey(config.ServiceModelBreaches, []byte("{\"a\":1}\n"))
	c := FallbackKey(config.ServiceModelBreaches, []byte(`{"a":2}`))
	d := FallbackKey(config.ServiceAntigena, []byte(`{"a":1}`))
	if a != b {
		t.Errorf("whitespace changes the key: %q != %q", a, b)
	}
	if a == c || a == d {
		t.Errorf("keys collide: %q %q %q", a, c, d)
	}
	const want = "mb:sha256:015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
	if a != want {
		t.Errorf("FallbackKey = %q, want %q", a, want)
	}
	if !strings.HasPrefix(d, "ag:sha256:") {
		t.Errorf("antigena fallback key %q lacks its prefix", d)
	}
}

// TestActionStateKeys checks that an antigena action gets a new key exactly when its mutable
// state changes.
func TestActionStateKeys(t *testing.T) {
	t.Parallel()
	base := `{"codeid":9,"did":1,"start":1000,"expires":5000,"updated":"1000","active":true,"cleared":false,"blocked":true,"label":"x"}`
	keyOf := func(raw string) string {
		t.Helper()
		evs, err := processOne(t, Options{Service: config.ServiceAntigena}, raw)
		if err != nil || len(evs) != 1 {
			t.Fatalf("Process(%s) = %v, %v", raw, evs, err)
		}
		return evs[0].Key
	}
	baseKey := keyOf(base)
	same := map[string]string{
		"whitespace":               strings.ReplaceAll(base, ",", ", "),
		"updated as number":        strings.Replace(base, `"updated":"1000"`, `"updated":1000`, 1),
		"immutable field differs":  strings.Replace(base, `"label":"x"`, `"label":"y"`, 1),
		"member order":             `{"blocked":true,"cleared":false,"active":true,"updated":"1000","expires":5000,"start":1000,"did":1,"codeid":9,"label":"x"}`,
		"expires as string number": strings.Replace(base, `"expires":5000`, `"expires":"5000"`, 1),
	}
	for name, raw := range same {
		if got := keyOf(raw); got != baseKey {
			t.Errorf("%s: key %q, want unchanged %q", name, got, baseKey)
		}
	}
	changed := map[string]string{
		"updated":         strings.Replace(base, `"updated":"1000"`, `"updated":"2000"`, 1),
		"expires":         strings.Replace(base, `"expires":5000`, `"expires":6000`, 1),
		"active":          strings.Replace(base, `"active":true`, `"active":false`, 1),
		"cleared":         strings.Replace(base, `"cleared":false`, `"cleared":true`, 1),
		"blocked":         strings.Replace(base, `"blocked":true`, `"blocked":false`, 1),
		"blocked to null": strings.Replace(base, `"blocked":true`, `"blocked":null`, 1),
		"updated removed": strings.Replace(base, `"updated":"1000",`, ``, 1),
	}
	seen := map[string]string{baseKey: "base"}
	for name, raw := range changed {
		got := keyOf(raw)
		if !strings.HasPrefix(got, "ag:9:") || len(got) != len("ag:9:")+16 {
			t.Errorf("%s: key %q, want ag:9:<16 hex digits>", name, got)
		}
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: key %q equals the key of %s", name, got, prev)
		}
		seen[got] = name
	}
}

func TestProcessMalformed(t *testing.T) {
	t.Parallel()
	for _, service := range config.Services {
		for _, raw := range []string{``, `{`, `{"pbid":1`, `{"a":1}}`, `{"a":tru}`, "{\"a\":\"\x01\"}", `<html>`} {
			t.Run(fmt.Sprintf("%s/%q", service, raw), func(t *testing.T) {
				t.Parallel()
				evs, err := processOne(t, Options{Service: service, Flatten: true}, raw)
				if !errors.Is(err, jsonscan.ErrMalformed) || len(evs) != 0 {
					t.Errorf("Process(%q) = %d events, %v; want ErrMalformed", raw, len(evs), err)
				}
			})
		}
	}
}

func TestProcessEmitError(t *testing.T) {
	t.Parallel()
	errStop := errors.New("stop")
	p, err := NewProcessor(Options{Service: config.ServiceStatus, Flatten: true})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	err = p.Process([]byte(`{"probes":{"1":{},"2":{}}}`), testPoll, func(Event) error {
		calls++
		return errStop
	})
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("err = %v after %d calls; want errStop after 1", err, calls)
	}
}

func TestProcessDataIsOwned(t *testing.T) {
	t.Parallel()
	raw := []byte(`{"pbid":1,"time":2}`)
	evs, err := processOne(t, Options{Service: config.ServiceModelBreaches}, string(raw))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := NewProcessor(Options{Service: config.ServiceModelBreaches})
	var got Event
	if err := p.Process(raw, testPoll, func(ev Event) error { got = ev; return nil }); err != nil {
		t.Fatal(err)
	}
	copy(raw, strings.Repeat("x", len(raw)))
	if !bytes.Equal(got.Data, evs[0].Data) {
		t.Errorf("Data changed with raw: %s", got.Data)
	}
}

func TestNewProcessorErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{"unknown service", Options{Service: "devices"}, ErrUnknownService},
		{"empty service", Options{}, ErrUnknownService},
		{"empty path", Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Salt: "s", Hash: []string{""}}}, ErrInvalidObfuscation},
		{"empty segment", Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Mask: []string{"device..ip"}}}, ErrInvalidObfuscation},
		{"leading dot", Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Mask: []string{".ip"}}}, ErrInvalidObfuscation},
		{"bare brackets", Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Mask: []string{"[].ip"}}}, ErrInvalidObfuscation},
		{"index", Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Mask: []string{"a[0].ip"}}}, ErrInvalidObfuscation},
		{"unbalanced bracket", Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Mask: []string{"a[.ip"}}}, ErrInvalidObfuscation},
		{"hash without salt", Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Hash: []string{"device.ip"}}}, ErrInvalidObfuscation},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewProcessor(tc.opts); !errors.Is(err, tc.want) {
				t.Errorf("NewProcessor(%+v) error = %v, want %v", tc.opts, err, tc.want)
			}
		})
	}
	for _, opts := range []Options{
		{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Mask: []string{"a[][].b", "x"}}},
		{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{}},
	} {
		if _, err := NewProcessor(opts); err != nil {
			t.Errorf("NewProcessor(%+v): %v", opts, err)
		}
	}
}

func TestObfuscation(t *testing.T) {
	t.Parallel()
	const salt = "pepper"
	h := func(s string) string {
		ob := &obfuscator{salt: []byte(salt)}
		return string(ob.hash(&jsonscan.Node{Raw: quoteForTest(s)}))
	}
	tests := []struct {
		name       string
		hash, mask []string
		raw        string
		want       string
	}{
		{name: "string", hash: []string{"device.ip"},
			raw: `{"device":{"ip":"10.0.0.1","did":3}}`, want: `{"device":{"ip":` + h("10.0.0.1") + `,"did":3}}`},
		{name: "number and bool hashed as their literal", hash: []string{"a", "b"},
			raw: `{"a":12.50,"b":true}`, want: `{"a":` + h("12.50") + `,"b":` + h("true") + `}`},
		{name: "escaped string hashed decoded", hash: []string{"a"},
			raw: `{"a":"\u0041\/"}`, want: `{"a":` + h("A/") + `}`},
		{name: "object hashed as compact JSON", hash: []string{"a"},
			raw: `{"a":{"x": [1, 2]}}`, want: `{"a":` + h(`{"x":[1,2]}`) + `}`},
		{name: "null untouched", hash: []string{"a"}, mask: []string{"b"},
			raw: `{"a":null,"b":null}`, want: `{"a":null,"b":null}`},
		{name: "mask", mask: []string{"device.hostname"},
			raw: `{"device":{"hostname":"pc-1"}}`, want: `{"device":{"hostname":"***"}}`},
		{name: "mask a whole object", mask: []string{"device"},
			raw: `{"device":{"hostname":"pc-1"},"x":1}`, want: `{"device":"***","x":1}`},
		{name: "missing paths ignored", hash: []string{"device.ip", "x.y.z", "arr[].k"}, mask: []string{"nope"},
			raw: `{"device":"scalar","arr":[1,{"j":2}]}`, want: `{"device":"scalar","arr":[1,{"j":2}]}`},
		{name: "array elements", hash: []string{"breachDevices[].ip"},
			raw:  `{"breachDevices":[{"ip":"a"},{"ip":"b","mac":"m"},{}]}`,
			want: `{"breachDevices":[{"ip":` + h("a") + `},{"ip":` + h("b") + `,"mac":"m"},{}]}`},
		{name: "nested arrays", hash: []string{"triggeredComponents[].triggeredFilters[].trigger.value"},
			raw:  `{"triggeredComponents":[{"triggeredFilters":[{"trigger":{"value":"v1"}},{"trigger":{"value":7}}]},{"triggeredFilters":[]}]}`,
			want: `{"triggeredComponents":[{"triggeredFilters":[{"trigger":{"value":` + h("v1") + `}},{"trigger":{"value":` + h("7") + `}}]},{"triggeredFilters":[]}]}`},
		{name: "array of arrays", mask: []string{"m[][].k"},
			raw: `{"m":[[{"k":1}],[{"k":2},{"j":3}]]}`, want: `{"m":[[{"k":"***"}],[{"k":"***"},{"j":3}]]}`},
		{name: "every element of an array of scalars", mask: []string{"ips[]"},
			raw: `{"ips":["a","b",null]}`, want: `{"ips":["***","***",null]}`},
		{name: "brackets over an object's values", mask: []string{"probes[].ipAddress"},
			raw:  `{"probes":{"12":{"ipAddress":"a"},"13":{"ipAddress":"b"}}}`,
			want: `{"probes":{"12":{"ipAddress":"***"},"13":{"ipAddress":"***"}}}`},
		{name: "mask wins over hash", hash: []string{"a"}, mask: []string{"a"},
			raw: `{"a":"x"}`, want: `{"a":"***"}`},
		{name: "escaped key matches", mask: []string{"ip"},
			raw: `{"\u0069p":"x"}`, want: `{"\u0069p":"***"}`},
		{name: "duplicate keys all rewritten", mask: []string{"ip"},
			raw: `{"ip":"x","ip":"y"}`, want: `{"ip":"***","ip":"***"}`},
		{name: "order, numbers and escapes preserved", mask: []string{"m"},
			raw: `{"z":1.0e+2,"m":1,"a":"\u00e9<>&","b":-0}`, want: `{"z":1.0e+2,"m":"***","a":"\u00e9<>&","b":-0}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ob := &config.Obfuscation{Salt: salt, Hash: tc.hash, Mask: tc.mask}
			evs, err := processOne(t, Options{Service: config.ServiceSummary, Obfuscation: ob}, tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(evs[0].Data); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// quoteForTest returns s as a JSON string token.
func quoteForTest(s string) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestObfuscationKeysFromOriginal checks that dedupe keys do not depend on the salt or on the
// obfuscated fields.
func TestObfuscationKeysFromOriginal(t *testing.T) {
	t.Parallel()
	raw := `{"pbid":17,"time":5,"device":{"ip":"10.0.0.1"}}`
	for _, ob := range []*config.Obfuscation{
		nil,
		{Salt: "one", Hash: []string{"device.ip", "pbid", "time"}},
		{Salt: "two", Mask: []string{"pbid", "time"}},
	} {
		evs, err := processOne(t, Options{Service: config.ServiceModelBreaches, Obfuscation: ob}, raw)
		if err != nil {
			t.Fatal(err)
		}
		if evs[0].Key != "mb:17" || evs[0].Time != 5 {
			t.Errorf("obfuscation %+v: key, time = %q, %d; want mb:17, 5", ob, evs[0].Key, evs[0].Time)
		}
	}
}

func TestFlattenStatus(t *testing.T) {
	t.Parallel()
	type ev struct{ node, data string }
	tests := []struct {
		name string
		raw  string
		want []ev
	}{
		{name: "no children", raw: `{"time":"t","uuid":"u"}`,
			want: []ev{{"master", `{"time":"t","uuid":"u"}`}}},
		{name: "empty children kept whole", raw: `{"time":"t","probes":{},"instances":{}}`,
			want: []ev{{"master", `{"time":"t","probes":{},"instances":{}}`}}},
		{name: "non-object children kept whole", raw: `{"probes":null,"instances":[1]}`,
			want: []ev{{"master", `{"probes":null,"instances":[1]}`}}},
		{name: "probes", raw: `{"a":1,"probes":{"12":{"id":12,"x":1},"13":{"error":true}},"b":2}`,
			want: []ev{
				{"probe:12", `{"a":1,"b":2,"probe_info":{"id":12,"x":1}}`},
				{"probe:13", `{"a":1,"b":2,"probe_info":{"id":13,"error":true}}`},
			}},
		{name: "non-numeric key id is a string", raw: `{"probes":{"p-1":{"x":1},"007":{},"-3":{}}}`,
			want: []ev{
				{"probe:p-1", `{"probe_info":{"id":"p-1","x":1}}`},
				{"probe:007", `{"probe_info":{"id":"007"}}`},
				{"probe:-3", `{"probe_info":{"id":-3}}`},
			}},
		{name: "null id replaced", raw: `{"probes":{"5":{"a":1,"id":null}}}`,
			want: []ev{{"probe:5", `{"probe_info":{"id":5,"a":1}}`}}},
		{name: "existing id kept even if it differs from the key", raw: `{"probes":{"5":{"a":1,"id":6}}}`,
			want: []ev{{"probe:5", `{"probe_info":{"a":1,"id":6}}`}}},
		{name: "non-object probe", raw: `{"probes":{"5":"down"}}`,
			want: []ev{{"probe:5", `{"probe_info":"down"}`}}},
		{name: "instances with nested probes then top-level probes",
			raw: `{"t":1,"instances":{"1":{"id":1,"probes":{"123":{"id":123}},"v":"a"},"2":{"v":"b"}},"probes":{"9":{"id":9}},"u":2}`,
			want: []ev{
				{"instance:1", `{"t":1,"u":2,"instance_info":{"id":1,"v":"a"}}`},
				{"instance:1:probe:123", `{"t":1,"u":2,"instance_info":{"id":1,"v":"a"},"probe_info":{"id":123}}`},
				{"instance:2", `{"t":1,"u":2,"instance_info":{"id":2,"v":"b"}}`},
				{"probe:9", `{"t":1,"u":2,"probe_info":{"id":9}}`},
			}},
		{name: "body order: probes before instances",
			raw: `{"probes":{"9":{}},"instances":{"1":{}}}`,
			want: []ev{
				{"probe:9", `{"probe_info":{"id":9}}`},
				{"instance:1", `{"instance_info":{"id":1}}`},
			}},
		{name: "escaped map key", raw: `{"probes":{"\u0031":{}}}`,
			want: []ev{{"probe:1", `{"probe_info":{"id":1}}`}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			evs, err := processOne(t, Options{Service: config.ServiceStatus, Flatten: true}, tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			var got []ev
			for _, e := range evs {
				if e.Time != testPollMs {
					t.Errorf("time %d, want poll time", e.Time)
				}
				node, ok := strings.CutPrefix(e.Key, "st:1714564800000:")
				if !ok {
					t.Errorf("key %q lacks the st:<pollMs>: prefix", e.Key)
				}
				got = append(got, ev{node, string(e.Data)})
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got  %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestSortByTime(t *testing.T) {
	t.Parallel()
	evs := []Event{{Key: "a", Time: 3}, {Key: "b", Time: 1}, {Key: "c", Time: 3}, {Key: "d", Time: 1}, {Key: "e", Time: 2}}
	SortByTime(evs)
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Key)
	}
	if want := "b d e a c"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
	SortByTime(nil)
}

// TestProcessConcurrent runs one Processor from several goroutines (meaningful under -race).
func TestProcessConcurrent(t *testing.T) {
	t.Parallel()
	p, err := NewProcessor(Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{Salt: "s", Hash: []string{"device.ip"}}})
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, perG = 4, 200
	var (
		wg      sync.WaitGroup
		emitted atomic.Int64
	)
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range perG {
				raw := fmt.Sprintf(`{"pbid":%d,"time":%d,"device":{"ip":"10.0.0.%d"}}`, g*perG+i, i+1, i%256)
				err := p.Process([]byte(raw), testPoll, func(ev Event) error {
					if want := fmt.Sprintf("mb:%d", g*perG+i); ev.Key != want {
						return fmt.Errorf("key %q, want %q", ev.Key, want)
					}
					emitted.Add(1)
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := emitted.Load(); got != goroutines*perG {
		t.Errorf("emitted %d events, want %d", got, goroutines*perG)
	}
}

// TestAppendTextID checks the one-allocation key builder against parseTextID, escapes included.
func TestAppendTextID(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{
		`"4f5e6d7c-1a2b-3c4d-5e6f-7a8b9c0d1e2f"`, `"a"`, `""`, `"a b"`, `"tab\there"`, `"caf\u00e9"`, `"caf` + "\xc3\xa9" + `"`,
		`"\u0041BC"`, `"a\"b"`, `"a\\b"`, `"` + strings.Repeat("x", 256) + `"`, `"` + strings.Repeat("x", 257) + `"`,
		`"~!"`, `"` + "\x7f" + `"`, `12345`, `-7`, `1.5`, `null`, `true`, `{"a":1}`, `["x"]`, ``,
	} {
		want, wantOK := parseTextID([]byte(tok))
		got, gotOK := appendTextID([]byte("ai:"), []byte(tok))
		if gotOK != wantOK || (wantOK && string(got) != "ai:"+want) {
			t.Errorf("appendTextID(%s) = %q, %v; parseTextID gives %q, %v", tok, got, gotOK, want, wantOK)
		}
	}
}
