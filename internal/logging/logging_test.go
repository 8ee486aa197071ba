package logging_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/logging"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		level, format string
		wantErr       string
		check         func(t *testing.T, out string)
	}{
		{"info", "json", "", func(t *testing.T, out string) {
			var m map[string]any
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatalf("json line %q: %v", out, err)
			}
			if m["msg"] != "Starting data collection every 60 seconds" || m["level"] != "INFO" || m["input"] != "darktrace" {
				t.Errorf("json line = %v", m)
			}
		}},
		{"info", "text", "", func(t *testing.T, out string) {
			if !strings.Contains(out, `level=INFO msg="Starting data collection every 60 seconds" input=darktrace`) {
				t.Errorf("text line = %q", out)
			}
		}},
		{"warn", "text", "", func(t *testing.T, out string) {
			if out != "" {
				t.Errorf("an info line passed a warn level: %q", out)
			}
		}},
		{"info", "xml", "--log-format must be text or json", nil},
		{"loud", "text", "parsing --log-level", nil},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		l, err := logging.New(&buf, tt.level, tt.format)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New(%q, %q) error = %v, want %q", tt.level, tt.format, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		l.Info("Starting data collection every 60 seconds", "input", "darktrace")
		tt.check(t, buf.String())
	}
}
