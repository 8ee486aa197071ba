package events

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// goldenPollTime is the fixed poll time of every golden case.
var goldenPollTime = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// goldenCases lists testdata/<name>/response.json with the options that process it.
var goldenCases = []struct {
	name string
	opts Options
}{
	{"modelbreaches-sekoia", Options{Service: config.ServiceModelBreaches}},
	{"modelbreaches-elastic", Options{Service: config.ServiceModelBreaches}},
	{"modelbreaches-sekoia-obfuscated", Options{Service: config.ServiceModelBreaches, Obfuscation: &config.Obfuscation{
		Salt: "golden-salt",
		Hash: []string{"device.ip", "device.ips[].ip", "triggeredComponents[].triggeredFilters[].trigger.value", "missing.path"},
		Mask: []string{"device.hostname", "device.macaddress"},
	}}},
	{"aianalyst-incidentevents-sekoia", Options{Service: config.ServiceIncidentEvents}},
	{"aianalyst-incidentevents-elastic", Options{Service: config.ServiceIncidentEvents}},
	{"aianalyst-incidentevents-sekoia-obfuscated", Options{Service: config.ServiceIncidentEvents, Obfuscation: &config.Obfuscation{
		Salt: "golden-salt",
		Hash: []string{"breachDevices[].ip", "breachDevices[].did"},
		Mask: []string{"breachDevices[].hostname"},
	}}},
	{"antigena-apiguide6-cleaned", Options{Service: config.ServiceAntigena}},
	{"antigena-includehistory-apiguide6-cleaned", Options{Service: config.ServiceAntigena}},
	{"antigena-includeconnections-apiguide6-cleaned", Options{Service: config.ServiceAntigena}},
	{"summarystatistics-apiguide6-cleaned", Options{Service: config.ServiceSummary}},
	{"status-apiguide6-cleaned", Options{Service: config.ServiceStatus, Flatten: true}},
	{"status-apiguide6-unflattened", Options{Service: config.ServiceStatus, Flatten: false}},
	{"status-unifiedview-apiguide6-skeleton", Options{Service: config.ServiceStatus, Flatten: true}},
	{"status-unifiedview-obfuscated", Options{Service: config.ServiceStatus, Flatten: true, Obfuscation: &config.Obfuscation{
		Salt: "golden-salt",
		Hash: []string{"instances[].probes[].id"},
		Mask: []string{"installed"},
	}}},
	{"status-seed-example", Options{Service: config.ServiceStatus, Flatten: true}},
}

// processBody runs a response body through jsonscan.Split in its service's shape, Process and
// SortByTime, like the worker.
func processBody(t testing.TB, body []byte, opts Options, pollTime time.Time) []Event {
	t.Helper()
	p, err := NewProcessor(opts)
	if err != nil {
		t.Fatalf("NewProcessor: %v", err)
	}
	var evs []Event
	err = jsonscan.Split(bytes.NewReader(body), darktrace.ShapeFor(opts.Service), func(raw []byte) error {
		return p.Process(raw, pollTime, func(ev Event) error {
			evs = append(evs, ev)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("Split/Process: %v", err)
	}
	SortByTime(evs)
	return evs
}

// processBodyFound is processBody the worker's way: jsonscan.SplitLookup finds the key and time
// fields in the pass that splits the body, and ProcessFound uses them.
func processBodyFound(t testing.TB, body []byte, opts Options, pollTime time.Time) []Event {
	t.Helper()
	p, err := NewProcessor(opts)
	if err != nil {
		t.Fatalf("NewProcessor: %v", err)
	}
	var evs []Event
	err = jsonscan.SplitLookup(bytes.NewReader(body), darktrace.ShapeFor(opts.Service), p.Fields(), func(raw []byte, vals [][]byte) error {
		return p.ProcessFound(raw, vals, pollTime, func(ev Event) error {
			evs = append(evs, ev)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("SplitLookup/ProcessFound: %v", err)
	}
	SortByTime(evs)
	return evs
}

// encodeJSONL renders events one per line as {"key":…,"time":…,"data":…}.
func encodeJSONL(evs []Event) []byte {
	var b []byte
	for _, ev := range evs {
		b = append(b, `{"key":`...)
		b = strconv.AppendQuote(b, ev.Key)
		b = append(b, `,"time":`...)
		b = strconv.AppendInt(b, ev.Time, 10)
		b = append(b, `,"data":`...)
		b = append(b, ev.Data...)
		b = append(b, "}\n"...)
	}
	return b
}

func TestGolden(t *testing.T) {
	t.Parallel()
	dirs, err := filepath.Glob("testdata/*/response.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != len(goldenCases) {
		t.Errorf("testdata has %d response.json files, goldenCases has %d entries", len(dirs), len(goldenCases))
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join("testdata", tc.name)
			body, err := os.ReadFile(filepath.Join(dir, "response.json"))
			if err != nil {
				t.Fatal(err)
			}
			got := encodeJSONL(processBody(t, body, tc.opts, goldenPollTime))
			wantPath := filepath.Join(dir, "want.jsonl")
			if *update {
				if err := os.WriteFile(wantPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", wantPath, got, want)
			}
			if found := encodeJSONL(processBodyFound(t, body, tc.opts, goldenPollTime)); !bytes.Equal(found, want) {
				t.Errorf("SplitLookup and ProcessFound: output differs from %s:\ngot:\n%s\nwant:\n%s", wantPath, found, want)
			}
		})
	}
}
