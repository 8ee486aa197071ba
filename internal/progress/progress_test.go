package progress_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/internal/progress"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		slots, total int
		events       int64
		elapsed      time.Duration
		want         string
	}{
		{0, 48, 0, 0, "progress: 0/48 slots, 0 events"},
		{12, 48, 3000, 10 * time.Second, "progress: 12/48 slots, 3000 events, 300.0 events/s, about 30s left"},
		{48, 48, 9000, 30 * time.Second, "progress: 48/48 slots, 9000 events, 300.0 events/s, done"},
	}
	for _, tt := range tests {
		if got := progress.Line("slots", tt.slots, tt.total, tt.events, tt.elapsed); got != tt.want {
			t.Errorf("Line(%d, %d, %d, %v) = %q, want %q", tt.slots, tt.total, tt.events, tt.elapsed, got, tt.want)
		}
	}
}

// TestPlainLines: off a terminal, the reporter writes one plain line per period in which slots
// were done, and a last one on Finish; never a carriage return or an escape sequence.
func TestPlainLines(t *testing.T) {
	t.Parallel()
	var out logtest.Buffer
	clock := clockwork.NewFakeClock()
	r := progress.New(&out, 4, progress.Options{Clock: clock, Every: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	waitLines := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(out.String(), "\n") < n {
			if time.Now().After(deadline) {
				t.Fatalf("want %d lines, have:\n%s", n, out.String())
			}
			time.Sleep(time.Millisecond) // polling a condition under a deadline
		}
	}
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // the ticker exists
		t.Fatal(err)
	}
	r.Add(1, 100)
	clock.Advance(10 * time.Second)
	waitLines(1)
	clock.Advance(10 * time.Second) // nothing done: no line
	r.Add(2, 200)
	clock.Advance(10 * time.Second)
	waitLines(2)
	r.Add(1, 50)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.Finish()
	got := out.String()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	want := []string{
		"progress: 1/4 slots, 100 events, 10.0 events/s, about 30s left",
		"progress: 3/4 slots, 300 events, 10.0 events/s, about 10s left",
		"progress: 4/4 slots, 350 events, 11.7 events/s, done",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if strings.ContainsAny(got, "\r\x1b") {
		t.Errorf("plain output holds a carriage return or escape: %q", got)
	}
}
