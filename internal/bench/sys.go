package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func maxPerSecond(ts []time.Time) int {
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= time.Second {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// cpuTime returns user+system CPU time of who (RUSAGE_SELF or RUSAGE_CHILDREN).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS resets the kernel's peak RSS of this process (VmHWM); it reports whether it could.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSSBytes returns VmHWM from /proc/self/status, or getrusage's maxrss.
func peakRSSBytes() int64 {
	if f, err := os.Open("/proc/self/status"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss << 10
}

// memSampler samples the live heap every 10 ms and keeps the peak. With a profile path, it
// writes a heap profile whenever the peak grows by a tenth.
type memSampler struct {
	stopc chan struct{}
	done  chan struct{}
	peak  uint64
}

func startMemSampler(profile, name string) *memSampler {
	m := &memSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		var profiled uint64
		for {
			metrics.Read(s)
			if s[0].Value.Kind() == metrics.KindUint64 {
				m.peak = max(m.peak, s[0].Value.Uint64())
			}
			if profile != "" && m.peak > profiled+profiled/10+1<<20 {
				profiled = m.peak
				_ = writeHeapProfile(profile + "." + name)
			}
			select {
			case <-m.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memSampler) stop() uint64 {
	close(m.stopc)
	<-m.done
	return m.peak
}

// writeHeapProfile writes the heap profile to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating the heap profile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		return fmt.Errorf("writing the heap profile: %w", err)
	}
	return nil
}

// machine describes this host.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}

// Table prints the report for people.
func (rep *Report) Table(w io.Writer) {
	fmt.Fprintf(w, "machine: %d CPUs, %s, %s, %s\n\n", rep.Machine.CPUs, rep.Machine.CPUModel, rep.Machine.GoVersion, rep.Machine.OS)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tSLOTS\tPROCS×INFLIGHT\tLATENCY\tWALL\tEVENTS\tEVENTS/S\tMB/S\tCPU-S/M-EV\tREQ\tMAX REQ/S\tPEAK RSS MB\tPEAK HEAP MB")
	row := func(r *RunResult) {
		ev := strconv.FormatInt(r.Events, 10)
		// Expected counts what the run's slots must deliver; lines of the slot after the last one
		// (breaches created after the data's end) may arrive before the run's end is read, so
		// only fewer lines than expected is a finding.
		if r.Expected > 0 && r.Events < r.Expected {
			ev += fmt.Sprintf(" (MISSING: expected %d)", r.Expected)
		}
		conc := strconv.Itoa(r.Concurrency)
		if r.Concurrency == 0 {
			conc = "adaptive"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d×%s\t%gms\t%.2fs\t%s\t%.0f\t%.1f\t%.1f\t%d\t%d\t%.0f\t%.0f\n", r.Name, r.Slots, r.Workers, conc,
			r.LatencyMS, r.WallSeconds, ev, r.EventsPerSecond, r.MBPerSecond, r.CPUPerMillionEvent, r.Requests, r.MaxRequestsPerSecond, r.PeakRSSMB, r.PeakHeapMB)
	}
	var notes []string
	if b := rep.Backfill; b != nil {
		row(&b.Fleet)
		row(&b.Baseline)
		ex := "measured"
		if b.BaselineExtrapolated {
			ex = fmt.Sprintf("EXTRAPOLATED from %d of %d slots", b.Baseline.Slots, b.Fleet.Slots)
		}
		inFlight := strconv.Itoa(b.Fleet.Concurrency * b.Fleet.Workers)
		if b.Fleet.Concurrency == 0 {
			inFlight = "adaptive pacing"
		}
		notes = append(notes, fmt.Sprintf("backfill: %d slots in %.2fs with %s in flight vs sequential baseline %.2fs (%s): %.1f× faster",
			b.Fleet.Slots, b.Fleet.WallSeconds, inFlight, b.BaselineWallSeconds, ex, b.Speedup))
		if n := ceilingNote(&b.Fleet, b.CeilingRPS); n != "" {
			notes = append(notes, n)
		}
		if b.Fleet.Pacing != nil {
			notes = append(notes, pacingNote("backfill", b.Fleet.Pacing))
		}
	}
	if t := rep.Throughput; t != nil {
		row(t)
		notes = append(notes, fmt.Sprintf("throughput: %.0f events/s, %.1f MB/s of event JSON, %.1f CPU-s per million events", t.EventsPerSecond, t.MBPerSecond, t.CPUPerMillionEvent))
		if f := t.FakesCPU; f != nil {
			notes = append(notes, fmt.Sprintf("throughput: %.1f CPU-s per million events without the fakes (the fake appliance %.2f CPU-s, the fake Devo %.2f CPU-s, by the labels of a CPU profile of the run)",
				f.FleetCPUPerMillionEvent, f.ApplianceSeconds, f.DevoSeconds))
		}
		if p := t.PreRendered; p != nil {
			n := fmt.Sprintf("throughput: %d data requests served from the responses rendered before the run, %d rendered live", p.Served, p.Missed)
			if p.Missed > 0 {
				n += " (WARNING: they missed the pre-rendered responses; the fake's rendering is in the run's CPU)"
			}
			notes = append(notes, n)
		}
		if c := rep.Ceiling; c != nil {
			notes = append(notes, fmt.Sprintf("throughput: %s events/s = %.0f%% of the split-only ceiling %s events/s (%.1f CPU-s per million events, %.1f allocations per event)",
				kilo(t.EventsPerSecond), c.ThroughputPercent, kilo(c.EventsPerSecond), c.CPUPerMillionEvent, c.AllocsPerEvent))
		}
	}
	if f := rep.Freshness; f != nil {
		row(&f.Run)
		notes = append(notes, fmt.Sprintf("freshness: p50 %.2fs, p99 %.2fs, max %.2fs over %d events (request period %gs, %d missing)",
			f.P50Seconds, f.P99Seconds, f.MaxSeconds, f.Measured, f.PeriodSeconds, f.Missing))
	}
	if m := rep.Memory; m != nil {
		row(m)
		notes = append(notes, fmt.Sprintf("memory: %.0f MB of event JSON, peak RSS %.0f MB, peak heap %.0f MB", float64(m.EventBytes)/(1<<20), m.PeakRSSMB, m.PeakHeapMB))
	}
	if s := rep.Scale; s != nil {
		row(&s.One)
		row(&s.Two)
		notes = append(notes, fmt.Sprintf("scale: %d worker processes %.2f× one (%.2fs vs %.2fs)", s.Two.Workers, s.Speedup, s.Two.WallSeconds, s.One.WallSeconds))
		if s.Rate != nil {
			row(s.Rate)
			notes = append(notes, fmt.Sprintf("rate limit: %g requests/s configured, at most %d in any second across %d processes", s.RateRPS, s.Rate.MaxRequestsPerSecond, s.Rate.Workers))
		}
	}
	if p := rep.Pacing; p != nil {
		row(&p.Adaptive)
		for i := range p.Fixed {
			row(&p.Fixed[i])
		}
		notes = append(notes, fmt.Sprintf("pacing: appliance at %gms + %gms per request in flight, 429 above %d in flight: adaptive %.2fs vs best fixed (%s) %.2f× its speed",
			p.LatencyMS, p.LatencyPerInFlight, p.RateLimitAbove, p.Adaptive.WallSeconds, p.Best, p.AdaptiveVsBest))
		notes = append(notes, pacingNote("pacing-adaptive", p.Adaptive.Pacing))
		for i := range p.Fixed {
			if f := p.Fixed[i].Pacing; f != nil {
				notes = append(notes, fmt.Sprintf("%s: %.2fs, the appliance saw at most %d in flight, %d answered 429", p.Fixed[i].Name, p.Fixed[i].WallSeconds, f.ApplianceMaxInFlight, f.Throttled))
			}
		}
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, n := range notes {
		fmt.Fprintln(w, n)
	}
}

// kilo writes a rate in thousands ("66k").
func kilo(v float64) string { return strconv.FormatFloat(v/1000, 'f', 0, 64) + "k" }
