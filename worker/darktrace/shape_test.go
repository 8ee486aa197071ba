package darktrace

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

// serviceOfSample returns the service of a recorded response under worker/events/testdata, from
// its directory name.
func serviceOfSample(t *testing.T, name string) string {
	t.Helper()
	for prefix, service := range map[string]string{
		"modelbreaches-": config.ServiceModelBreaches, "aianalyst-incidentevents-": config.ServiceIncidentEvents,
		"antigena-": config.ServiceAntigena, "summarystatistics-": config.ServiceSummary, "status-": config.ServiceStatus,
	} {
		if strings.HasPrefix(name, prefix) {
			return service
		}
	}
	t.Fatalf("sample %s: unknown service", name)
	return ""
}

// splitAll collects Split's values as strings.
func splitAll(r io.Reader, shape jsonscan.Shape) ([]string, error) {
	var got []string
	err := jsonscan.Split(r, shape, func(raw []byte) error {
		got = append(got, string(raw))
		return nil
	})
	return got, err
}

// TestSplitSamples checks that every recorded response splits, in its service's shape, into the
// events encoding/json finds, compacted like json.Compact, whatever the read sizes.
func TestSplitSamples(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("..", "events", "testdata", "*", "response.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	for _, file := range files {
		name := filepath.Base(filepath.Dir(file))
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			service := serviceOfSample(t, name)
			body, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			want := referenceSplit(t, body, service)
			for _, r := range []io.Reader{bytes.NewReader(body), iotest.OneByteReader(bytes.NewReader(body)), iotest.HalfReader(bytes.NewReader(body))} {
				got, err := splitAll(r, ShapeFor(service))
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("got %d events, want %d", len(got), len(want))
				}
				for i := range got {
					if got[i] != want[i] {
						t.Errorf("event %d:\ngot  %s\nwant %s", i, got[i], want[i])
					}
				}
			}
		})
	}
}

// referenceSplit splits a service's body with encoding/json and compacts each event with json.Compact.
func referenceSplit(t testing.TB, body []byte, service string) []string {
	t.Helper()
	var raws []json.RawMessage
	switch service {
	case config.ServiceSummary, config.ServiceStatus:
		raws = []json.RawMessage{body}
	case config.ServiceAntigena:
		if err := json.Unmarshal(body, &raws); err != nil {
			var obj struct{ Actions []json.RawMessage }
			if err := json.Unmarshal(body, &obj); err != nil {
				t.Fatal(err)
			}
			raws = obj.Actions
		}
	default:
		if err := json.Unmarshal(body, &raws); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]string, len(raws))
	for i, raw := range raws {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			t.Fatal(err)
		}
		out[i] = buf.String()
	}
	return out
}

func TestShapeFor(t *testing.T) {
	t.Parallel()
	tests := map[string]jsonscan.Shape{
		"antigena":                 jsonscan.ShapeWrapped("actions"),
		"aianalyst_incidentevents": jsonscan.ShapeArray,
		"summarystatistics":        jsonscan.ShapeObject,
		"status":                   jsonscan.ShapeObject,
		"modelbreaches":            jsonscan.ShapeArray,
		"unknown":                  jsonscan.ShapeArray,
	}
	for service, want := range tests {
		if got := ShapeFor(service); got != want {
			t.Errorf("ShapeFor(%q) = %v, want %v", service, got, want)
		}
	}
}
