package logging

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
)

// DefaultGCEvery is how often the Devo collector logs its [GC] memory line.
const DefaultGCEvery = 5 * time.Minute

// Mem is a memory reading: the host's used share of memory (0–1) and the process's resident and
// virtual sizes in bytes.
type Mem struct {
	Global   float64
	RSS, VMS uint64
}

// GC logs the Devo collector's memory line every Every, with the readings before and after a
// forced release of memory to the OS (debug.FreeOSMemory):
//
//	[GC] global: 66.6% -> 66.6%, process: RSS(44.88MiB -> 44.88MiB), VMS(32.80GiB -> 32.80GiB)
type GC struct {
	Logger *slog.Logger
	// Every is the period (default DefaultGCEvery).
	Every time.Duration
	// Clock paces the lines (default the real clock).
	Clock clockwork.Clock
	// Read takes a reading (default ReadMem, from /proc).
	Read func() (Mem, error)
}

// Run logs the line every period until ctx ends and returns nil once it stopped. A reading that
// fails is logged at debug level (a host without /proc) and the period skipped.
func (g *GC) Run(ctx context.Context) error {
	clock, every, read := g.Clock, g.Every, g.Read
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	if every <= 0 {
		every = DefaultGCEvery
	}
	if read == nil {
		read = ReadMem
	}
	t := clock.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.Chan():
		}
		before, err := read()
		if err == nil {
			debug.FreeOSMemory()
			var after Mem
			if after, err = read(); err == nil {
				g.Logger.Info(GCLine(before, after))
				continue
			}
		}
		g.Logger.Debug("reading memory usage for the [GC] line", "err", err)
	}
}

// GCLine formats the [GC] line of readings before and after the release.
func GCLine(before, after Mem) string {
	return fmt.Sprintf("[GC] global: %.1f%% -> %.1f%%, process: RSS(%s -> %s), VMS(%s -> %s)",
		before.Global*100, after.Global*100, size(before.RSS), size(after.RSS), size(before.VMS), size(after.VMS))
}

// size prints bytes as the collector does: MiB below a GiB, GiB above, two decimals.
func size(b uint64) string {
	if b >= 1<<30 {
		return fmt.Sprintf("%.2fGiB", float64(b)/(1<<30))
	}
	return fmt.Sprintf("%.2fMiB", float64(b)/(1<<20))
}

// ReadMem reads this process's RSS and VMS from /proc/self/statm and the host's used share of
// memory (1 - MemAvailable/MemTotal) from /proc/meminfo (Linux).
func ReadMem() (Mem, error) {
	var m Mem
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return m, fmt.Errorf("reading /proc/self/statm: %w", err)
	}
	f := strings.Fields(string(statm))
	if len(f) < 2 {
		return m, fmt.Errorf("/proc/self/statm has %d fields", len(f))
	}
	page := uint64(os.Getpagesize())
	vms, err1 := strconv.ParseUint(f[0], 10, 64)
	rss, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return m, fmt.Errorf("parsing /proc/self/statm %q", statm)
	}
	m.VMS, m.RSS = vms*page, rss*page
	info, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return m, fmt.Errorf("reading /proc/meminfo: %w", err)
	}
	var total, avail uint64
	for line := range strings.SplitSeq(string(info), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "MemTotal":
			total = n
		case "MemAvailable":
			avail = n
		}
	}
	if total == 0 {
		return m, fmt.Errorf("no MemTotal in /proc/meminfo")
	}
	m.Global = 1 - float64(avail)/float64(total)
	return m, nil
}
