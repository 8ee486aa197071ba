package ops

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var now = time.Date(2024, 5, 8, 12, 0, 0, 0, time.UTC)

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	y := `
outputs: {console_1: {type: console}}
inputs:
  darktrace:
    credentials: {public_token: pub, private_token: priv, instance: "https://dt.example"}
    services:
      modelbreaches: {start_time_in_utc_format: "2024-05-01T00:00:00Z"}
      aianalyst_incidentevents: {}
      status: {}
`
	cfg, err := config.Parse([]byte(y), config.LoadOptions{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func lane(t *testing.T, cfg *config.Config, service string) config.Lane {
	t.Helper()
	for _, ln := range cfg.Lanes() {
		if ln.Service == service {
			return ln
		}
	}
	t.Fatalf("no lane %s", service)
	return config.Lane{}
}

func TestSlotsBehind(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	mb := lane(t, cfg, config.ServiceModelBreaches)
	for _, tc := range []struct {
		name    string
		ln      config.Lane
		l       status.Lane
		want    int
		service string
	}{
		{name: "nothing delivered: from the start time", service: config.ServiceModelBreaches, want: 7*24 + 12 - 2},
		{name: "a day behind", service: config.ServiceModelBreaches, l: status.Lane{DeliveredUntil: now.Add(-24 * time.Hour)}, want: 22},
		{name: "caught up: the last window delivered", service: config.ServiceModelBreaches, l: status.Lane{DeliveredUntil: now.Add(-time.Hour)}},
		{name: "caught up: two windows and a period behind", service: config.ServiceModelBreaches, l: status.Lane{DeliveredUntil: now.Add(-2*time.Hour - mb.Svc.Period)}},
		{name: "starting from now", service: config.ServiceIncidentEvents},
		{name: "snapshot", service: config.ServiceStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := slotsBehind(lane(t, cfg, tc.service), tc.l, now); got != tc.want {
				t.Fatalf("slotsBehind = %d; want %d", got, tc.want)
			}
		})
	}
}

func TestReplayDone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		delivered, first uint64
		n, want          int
	}{
		{delivered: 9, first: 10, n: 5, want: 0},
		{delivered: 10, first: 10, n: 5, want: 1},
		{delivered: 14, first: 10, n: 5, want: 5},
		{delivered: 30, first: 10, n: 5, want: 5},
	} {
		if got := replayDone(status.Lane{DeliveredSeq: tc.delivered}, tc.first, tc.n); got != tc.want {
			t.Errorf("replayDone(delivered %d, first %d, n %d) = %d; want %d", tc.delivered, tc.first, tc.n, got, tc.want)
		}
	}
}

// TestBackfillUpdate: only the lanes behind at the first read are followed; progress counts
// from where each stood then; a lane that caught up is reported once and every lane caught up
// ends the backfill.
func TestBackfillUpdate(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	st := func(mbSeq uint64, mbUntil time.Time, mbEvents uint64) *status.Status {
		return &status.Status{Lanes: []status.Lane{
			{Input: "darktrace", Service: config.ServiceModelBreaches, PlannedSeq: 200, DeliveredSeq: mbSeq, DeliveredUntil: mbUntil, Events: mbEvents},
			{Input: "darktrace", Service: config.ServiceIncidentEvents, DeliveredSeq: 3, DeliveredUntil: now.Add(-time.Hour)},
			{Input: "darktrace", Service: config.ServiceStatus, DeliveredSeq: 1, Snapshot: true},
		}}
	}
	b := newBackfill(cfg, st(100, now.Add(-24*time.Hour), 1000), now)
	if b == nil || len(b.lanes) != 1 {
		t.Fatalf("backfill lanes = %v; want modelbreaches only", b)
	}
	lanes, done, total, events, all := b.update(st(110, now.Add(-14*time.Hour), 1500), now)
	if len(lanes) != 1 || done != 10 || total != 10+12 || events != 500 || all {
		t.Fatalf("update = %+v, done %d, total %d, events %d, all %v; want 10 of 22, 500 events, not all", lanes, done, total, events, all)
	}
	lanes, done, _, _, all = b.update(st(123, now.Add(-time.Hour), 1900), now)
	if !lanes[0].newlyCaughtUp || done != 23 || !all {
		t.Fatalf("update = %+v, done %d, all %v; want caught up, 23 slots", lanes, done, all)
	}
	if lanes, _, _, _, _ = b.update(st(124, now, 1900), now); lanes[0].newlyCaughtUp || !lanes[0].alreadyCaughtUp {
		t.Fatalf("update after catching up = %+v; want reported once", lanes)
	}
	if newBackfill(cfg, st(200, now.Add(-time.Hour), 0), now) != nil {
		t.Fatal("newBackfill of caught-up lanes is not nil")
	}
}

// TestShowOn: JSON logs send progress through the logger; text logs to a non-terminal writer
// get plain lines, never a bar.
func TestShowOn(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	if s := ShowOn(&buf, logger, true); s.Logger != logger || s.Terminal {
		t.Fatalf("ShowOn(json) = %+v; want the logger", s)
	}
	s := ShowOn(&buf, logger, false)
	if s.Logger != nil || s.Terminal {
		t.Fatalf("ShowOn(text, a buffer) = %+v; want plain lines", s)
	}
	rep := s.reporter("replayed slots delivered", 4)
	rep.Set(4, 4, 8)
	rep.Finish()
	if got := buf.String(); !strings.HasPrefix(got, "progress: 4/4 replayed slots delivered, 8 events") || strings.ContainsAny(got, "\r\x1b") {
		t.Fatalf("plain output %q", got)
	}
}
