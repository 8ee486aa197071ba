package logging_test

import (
	"context"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/dtfleet/dtfleet/internal/logging"
	"github.com/dtfleet/dtfleet/internal/logtest"
)

func TestGCLine(t *testing.T) {
	t.Parallel()
	got := logging.GCLine(logging.Mem{Global: 0.666, RSS: 47_060_000, VMS: 35_218_000_000},
		logging.Mem{Global: 0.666, RSS: 47_060_000, VMS: 35_218_000_000})
	want := "[GC] global: 66.6% -> 66.6%, process: RSS(44.88MiB -> 44.88MiB), VMS(32.80GiB -> 32.80GiB)"
	if got != want {
		t.Errorf("GCLine = %q, want %q", got, want)
	}
}

// TestGCRun: each period logs one [GC] line read from this process's /proc, before and after
// the forced release.
func TestGCRun(t *testing.T) {
	t.Parallel()
	if _, err := logging.ReadMem(); err != nil {
		t.Skipf("no /proc memory readings here: %v", err)
	}
	var out logtest.Buffer
	clock := clockwork.NewFakeClock()
	g := &logging.GC{Logger: slog.New(slog.NewTextHandler(&out, nil)), Clock: clock}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clock.Advance(logging.DefaultGCEvery)
	line := regexp.MustCompile(`msg="\[GC\] global: \d+\.\d% -> \d+\.\d%, process: RSS\(\d+\.\d\dMiB -> \d+\.\d\dMiB\), VMS\(\d+\.\d\d[MG]iB -> \d+\.\d\d[MG]iB\)"`)
	deadline := time.Now().Add(10 * time.Second)
	for !line.MatchString(out.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no [GC] line after a period; log:\n%s", out.String())
		}
		time.Sleep(time.Millisecond) // polling a condition under a deadline
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
