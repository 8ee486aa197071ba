package bench

import (
	"bytes"
	"context"
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
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
	"github.com/dtfleet/dtfleet/worker/events"
)

// CeilingResult is what the split-and-encode path alone measured on the responses of the
// throughput run's slots: response bytes split by the worker's splitter (jsonscan.SplitLookup
// with the service's shape, the processor's key and time fields and the event size bound, as
// darktrace.Client.FetchLookup calls it), processed by the worker's event processor (keys,
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
	// responses by the fake appliance (done beforehand, slot by slot).
	WallSeconds        float64 `json:"wall_seconds"`
	CPUSeconds         float64 `json:"cpu_seconds"`
	EventsPerSecond    float64 `json:"events_per_second"`
	CPUPerMillionEvent float64 `json:"cpu_seconds_per_million_events"`
	AllocsPerEvent     float64 `json:"allocs_per_event"`
	// ThroughputPercent is the end-to-end run's events/s as a percentage of EventsPerSecond.
	ThroughputPercent float64 `json:"throughput_percent_of_ceiling"`
}

// throughput runs the throughput scenario: the fleet end to end, then, on the same appliance
// data, the split-and-encode ceiling.
func (r *benchRunner) throughput(ctx context.Context) (*RunResult, *CeilingResult, error) {
	spec := r.tpSpec("throughput", r.o.TPSlots)
	env, err := r.setup(ctx, spec)
	if err != nil {
		return nil, nil, err
	}
	defer env.close()
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
	fmt.Fprintf(r.progress, "bench: throughput ceiling: the same %d slots split and encoded in memory ...\n", spec.slots)
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

// ceiling splits and encodes the responses of the run's slots, as the worker requests them, on
// a fake appliance with the run's data but no latency.
func (e *benchEnv) ceiling(ctx context.Context) (*CeilingResult, error) {
	var ln *config.Lane
	for _, l := range e.cfg.Lanes() {
		if l.Service == config.ServiceModelBreaches {
			ln = &l
			break
		}
	}
	if ln == nil {
		return nil, fmt.Errorf("no %s lane in the bench's configuration", config.ServiceModelBreaches)
	}
	opts := e.fake.Options()
	opts.Latency, opts.Jitter, opts.Logger = 0, 0, nil
	fake := darktracetest.NewHandler(opts)
	defer fake.Close()
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	sp, err := newSplitEncoder(*ln, e.cfg.Workers.MaxEventSizeInMB<<20, host)
	if err != nil {
		return nil, err
	}
	res := &CeilingResult{Slots: e.spec.slots}
	w := e.r.o.Window
	samples := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	var cpu, wall time.Duration
	var allocs uint64
	for i := range e.spec.slots {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		start := e.dataStart.Add(time.Duration(i) * w)
		req := darktrace.Request{Service: ln.Service, Endpoint: ln.Svc.Endpoint, Start: start, End: start.Add(w), LookBack: ln.Svc.LookBack}
		body, err := render(fake, req)
		if err != nil {
			return nil, fmt.Errorf("slot %d: %w", i, err)
		}
		metrics.Read(samples)
		a0 := samples[0].Value.Uint64()
		c0, t0 := cpuTime(syscall.RUSAGE_SELF), time.Now()
		err = sp.run(body, start)
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
	path, query, err := req.PathAndQuery()
	if err != nil {
		return nil, err
	}
	apiRequest := path + "?" + query
	hreq := httptest.NewRequest(http.MethodGet, "http://appliance"+apiRequest, nil)
	date := time.Now().UTC().Format(darktrace.DateLayout)
	hreq.Header.Set("DTAPI-Token", darktracetest.DefaultPublicToken)
	hreq.Header.Set("DTAPI-Date", date)
	hreq.Header.Set("DTAPI-Signature", darktrace.Sign(darktracetest.DefaultPrivateToken, darktracetest.DefaultPublicToken, apiRequest, date))
	rec := httptest.NewRecorder()
	fake.ServeHTTP(rec, hreq)
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("the fake appliance answered %s with %d: %.200s", path, rec.Code, rec.Body.Bytes())
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
	// As the worker's fetch does: the key and time fields are found while splitting.
	err := jsonscan.SplitLookup(bytes.NewReader(body), s.shape, s.proc.Fields(), func(raw []byte, vals [][]byte) error {
		return s.proc.ProcessFound(raw, vals, poll, emit)
	}, jsonscan.MaxValue(s.maxSize, func(int, int64) error { return nil }))
	s.drain()
	return err
}

func (s *splitEncoder) drain() {
	_, _ = s.out.Write(s.buf)
	s.lineBytes += int64(len(s.buf))
	s.buf = s.buf[:0]
}
