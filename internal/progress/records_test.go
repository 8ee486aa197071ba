package progress_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/internal/progress"
)

// TestLoggerRecords: with a Logger (--log-format json), progress goes out as structured records
// through it, one JSON object a line, and nothing is written to the reporter's writer, even when
// the writer is marked a terminal. Set moves the total as a backfill's estimate does.
func TestLoggerRecords(t *testing.T) {
	t.Parallel()
	var logs, w logtest.Buffer
	clock := clockwork.NewFakeClock()
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	r := progress.New(&w, 0, progress.Options{Terminal: true, Logger: logger, Clock: clock, Label: "slots delivered (backfill)"})
	r.Set(10, 40, 500)
	clock.Advance(10 * time.Second)
	r.Finish() // a record now: slots changed since the last
	r.Set(40, 40, 900)
	clock.Advance(10 * time.Second)
	r.Finish()
	r.Finish() // nothing changed: no record
	if w.String() != "" {
		t.Fatalf("the writer got %q; want nothing with a Logger", w.String())
	}
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("a log line is not one JSON object: %q: %v", line, err)
		}
		recs = append(recs, m)
	}
	if len(recs) != 2 {
		t.Fatalf("%d records; want 2:\n%s", len(recs), logs.String())
	}
	for i, want := range []map[string]any{
		{"msg": "progress", "what": "slots delivered (backfill)", "slots": 10.0, "total": 40.0, "events": 500.0, "events_per_second": 50.0, "left": "30s"},
		{"msg": "progress", "slots": 40.0, "total": 40.0, "events": 900.0, "events_per_second": 45.0},
	} {
		for k, v := range want {
			if recs[i][k] != v {
				t.Errorf("record %d: %s = %v; want %v (%v)", i, k, recs[i][k], v, recs[i])
			}
		}
	}
	if _, ok := recs[1]["left"]; ok {
		t.Errorf("the last record has a time left: %v", recs[1])
	}
}

// TestSetPlain: Set's moving total shows in the plain lines.
func TestSetPlain(t *testing.T) {
	t.Parallel()
	var w logtest.Buffer
	clock := clockwork.NewFakeClock()
	r := progress.New(&w, 0, progress.Options{Clock: clock, Label: "replayed slots delivered"})
	r.Set(3, 12, 30)
	clock.Advance(3 * time.Second)
	r.Finish()
	if got, want := w.String(), "progress: 3/12 replayed slots delivered, 30 events, 10.0 events/s, about 9s left\n"; got != want {
		t.Fatalf("got %q; want %q", got, want)
	}
}
