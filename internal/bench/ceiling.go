package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/events"
)

// CeilingResult is what the split-and-encode path alone measured on the responses of the
// throughput run's slots, the very bytes the end-to-end run was served: response bytes split by
// the worker's splitter (jsonscan.SplitLookup with the service's shape, the processor's key and
// time fields and the event size bound, as darktrace.Client.FetchLookup calls it), processed by the worker's event processor (keys,
// times, flattening, obfuscation of the lane's configuration) and encoded as Devo lines by the
// shipper's encoder (devo.AppendLine) into memory. No bus, no persistence, no HTTP: it is the
// ceiling end-to-end throughput is measured against.
type CeilingResult struct {
	Slots  int   `json:"slots"`
	Events int64 `json:"events"`
	// ResponseBytes is the bytes of the responses split; LineBytes the bytes of the lines.
	ResponseBytes int64 `json:"response_bytes"`
	LineBytes     int64 `json:"line_bytes"`
	// WallSeconds and CPUSeconds cover the splitting and encoding only, not the rendering of the
	// responses (done once before the end-to-end run, into the file both sides read) nor their
	// reading from that file.
	WallSeconds        float64 `json:"wall_seconds"`
	CPUSeconds         float64 `json:"cpu_seconds"`
	EventsPerSecond    float64 `json:"events_per_second"`
	CPUPerMillionEvent float64 `json:"cpu_seconds_per_million_events"`
	AllocsPerEvent     float64 `json:"allocs_per_event"`
	// ThroughputPercent is the end-to-end run's events/s as a percentage of EventsPerSecond.
	ThroughputPercent float64 `json:"throughput_percent_of_ceiling"`
}

// throughput runs the throughput scenario: the slots' responses rendered once into a file
// before the run, the fleet end to end (served from that file when the appliance has no
// latency), then the split-and-encode ceiling on the same bytes.
func (r *benchRunner) throughput(ctx context.Context) (*RunResult, *CeilingResult, error) {
	spec := r.tpSpec("throughput", r.o.TPSlots)
	spec.profileFakes = true
	env, err := r.setup(ctx, spec)
	if err != nil {
		return nil, nil, err
	}
	defer env.close()
	fmt.Fprintf(r.progress, "bench: throughput: rendering the %d slots' responses into a file before the run ...\n", spec.slots)
	// Labelled apart from the run's fake appliance: the rendering is neither the run's work nor
	// the ceiling's (go tool pprof -tagignore fake=prerender).
	pprof.Do(ctx, pprof.Labels("fake", "prerender"), func(context.Context) { err = env.prerender() })
	if err != nil {
		return nil, nil, fmt.Errorf("rendering the responses: %w", err)
	}
	res, err := env.measure(ctx, func(ctx context.Context) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-env.lastSlot:
			return nil
		}
	})
	if err != nil {
		return nil, nil, err
	}
	if p := res.PreRendered; p != nil && p.Missed > 0 {
		fmt.Fprintf(r.progress, "bench: WARNING: throughput: %d data request(s) missed the pre-rendered responses and were rendered live (%d served from the file)\n",
			p.Missed, p.Served)
	}
	fmt.Fprintf(r.progress, "bench: throughput ceiling: the same %d slots' responses split and encoded in memory ...\n", spec.slots)
	// Labelled, so that a CPU profile of the bench tells the ceiling's samples from the run's
	// (go tool pprof -tagignore bench=ceiling).
	var ceil *CeilingResult
	pprof.Do(ctx, pprof.Labels("bench", "ceiling"), func(ctx context.Context) { ceil, err = env.ceiling(ctx) })
	if err != nil {
		return nil, nil, fmt.Errorf("the split-only ceiling: %w", err)
	}
	if ceil.EventsPerSecond > 0 {
		ceil.ThroughputPercent = 100 * res.EventsPerSecond / ceil.EventsPerSecond
	}
	return res, ceil, nil
}

// ceiling splits and encodes the responses of the run's slots as prerender rendered them: the
// bytes the run was served, read from the file (outside the timing) slot by slot.
func (e *benchEnv) ceiling(ctx context.Context) (*CeilingResult, error) {
	if e.pre == nil {
		return nil, errors.New("the slots' responses were not rendered")
	}
	ln, _, err := e.slotRequests()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(e.pre.path)
	if err != nil {
		return nil, fmt.Errorf("opening the rendered responses: %w", err)
	}
	defer f.Close()
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	sp, err := newSplitEncoder(*ln, e.cfg.Workers.MaxEventSizeInMB<<20, host)
	if err != nil {
		return nil, err
	}
	// The run's slots only: the ones after them were rendered for the requests made while the
	// run ended.
	slots := e.pre.slots[:min(e.spec.slots, len(e.pre.slots))]
	res := &CeilingResult{Slots: len(slots)}
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	var cpu, wall time.Duration
	var allocs uint64
	var buf []byte
	for i, slot := range slots {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		body, err := e.pre.body(f, i, buf)
		if err != nil {
			return nil, err
		}
		buf = body
		metrics.Read(samples)
		a0 := samples[0].Value.Uint64()
		c0, t0 := cpuTime(syscall.RUSAGE_SELF), time.Now()
		err = sp.run(body, slot.poll)
		wall += time.Since(t0)
		cpu += cpuTime(syscall.RUSAGE_SELF) - c0
		metrics.Read(samples)
		allocs += samples[0].Value.Uint64() - a0
		if err != nil {
			return nil, fmt.Errorf("slot %d: %w", i, err)
		}
		res.ResponseBytes += int64(len(body))
	}
	res.Events, res.LineBytes = sp.events, sp.lineBytes
	res.WallSeconds, res.CPUSeconds = wall.Seconds(), cpu.Seconds()
	if res.WallSeconds > 0 {
		res.EventsPerSecond = float64(res.Events) / res.WallSeconds
	}
	if res.Events > 0 {
		res.CPUPerMillionEvent = res.CPUSeconds / float64(res.Events) * 1e6
		res.AllocsPerEvent = float64(allocs) / float64(res.Events)
	}
	return res, nil
}

// render returns the body the fake appliance answers req with, signed as the worker's client
// signs it.
func render(fake http.Handler, req darktrace.Request) ([]byte, error) {
	hreq, err := signedRequest(req)
	if err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	fake.ServeHTTP(rec, hreq)
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("the fake appliance answered %s with %d: %.200s", hreq.URL.Path, rec.Code, rec.Body.Bytes())
	}
	return rec.Body.Bytes(), nil
}

// splitEncoder is the split-and-encode path: the worker's splitter and event processor, the
// shipper's line encoder, and a 64 KiB buffer standing in for the output's write buffer.
type splitEncoder struct {
	shape   jsonscan.Shape
	proc    *events.Processor
	maxSize int
	host    string
	tag     string

	// out receives the lines each time the buffer fills, as a connection would.
	out       io.Writer
	buf       []byte
	events    int64
	lineBytes int64
}

// lineBuffer is the size at which the encoded lines are dropped, as a connection's write buffer
// would hand them to the kernel.
const lineBuffer = 64 << 10

func newSplitEncoder(ln config.Lane, maxEvent int, host string) (*splitEncoder, error) {
	proc, err := events.NewProcessor(events.Options{Service: ln.Service, Flatten: ln.Svc.Flatten == nil || *ln.Svc.Flatten, Obfuscation: ln.Svc.Obfuscation})
	if err != nil {
		return nil, err
	}
	return &splitEncoder{shape: darktrace.ShapeFor(ln.Service), proc: proc, maxSize: maxEvent, host: host, tag: ln.Svc.Tag,
		out: io.Discard, buf: make([]byte, 0, 2*lineBuffer)}, nil
}

// run splits one response polled at poll and encodes its events, in response order.
func (s *splitEncoder) run(body []byte, poll time.Time) error {
	emit := func(ev events.Event) error {
		if len(s.buf) >= lineBuffer {
			s.drain()
		}
		s.buf = devo.AppendLine(s.buf, ev.Time, s.host, s.tag, ev.Data)
		s.events++
		return nil
	}
	// As the worker's fetch does: the key and time fields are found while splitting, and the
	// event is not copied by the processor (the line encoder copies it, as the worker's sorter
	// does).
	err := jsonscan.SplitLookup(bytes.NewReader(body), s.shape, s.proc.Fields(), func(raw []byte, vals [][]byte) error {
		return s.proc.ProcessFoundLent(raw, vals, poll, emit)
	}, jsonscan.MaxValue(s.maxSize, func(int, int64) error { return nil }))
	s.drain()
	return err
}

func (s *splitEncoder) drain() {
	_, _ = s.out.Write(s.buf)
	s.lineBytes += int64(len(s.buf))
	s.buf = s.buf[:0]
}
