package events

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
)

// incidentBody returns a /aianalyst/incidentevents-shaped body of n copies of the elastic
// sample's event (about 2 KB each, indented as the appliance sends it) with distinct ids.
func incidentBody(b *testing.B, n int) []byte {
	b.Helper()
	sample, err := os.ReadFile(filepath.Join("testdata", "aianalyst-incidentevents-elastic", "response.json"))
	if err != nil {
		b.Fatal(err)
	}
	sample = bytes.TrimSpace(sample)
	elem := bytes.TrimSpace(sample[1 : len(sample)-1]) // the one event, as indented in the body
	const oldID = `"eabc0011-1234-1234-1234-cabcdefg0011"`
	if !bytes.Contains(elem, []byte(oldID)) {
		b.Fatal("sample id not found")
	}
	var body bytes.Buffer
	body.WriteString("[\n  ")
	for i := range n {
		if i > 0 {
			body.WriteString(",\n  ")
		}
		id := `"` + strconv.Itoa(100000000+i) + `-1234-1234-1234-cabcdefg0011"`
		body.Write(bytes.Replace(elem, []byte(oldID), []byte(id), 1))
	}
	body.WriteString("\n]\n")
	return body.Bytes()
}

// BenchmarkSplit measures Split alone on 2 KB Darktrace-shaped events (DESIGN.md "JSON cost":
// encoding/json ~40 MB/s, a structural splitter ~135 MB/s on these machines).
func BenchmarkSplit(b *testing.B) {
	body := incidentBody(b, 2000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		if err := jsonscan.Split(bytes.NewReader(body), jsonscan.ShapeArray, func([]byte) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != 2000 {
			b.Fatalf("%d events", n)
		}
	}
}

// BenchmarkSplitReferenceDecoder is the baseline Split replaces: encoding/json's Decoder splitting
// the same body into RawMessages and compacting each.
func BenchmarkSplitReferenceDecoder(b *testing.B) {
	body := incidentBody(b, 2000)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var buf bytes.Buffer
	for b.Loop() {
		dec := json.NewDecoder(bytes.NewReader(body))
		if _, err := dec.Token(); err != nil {
			b.Fatal(err)
		}
		for dec.More() {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				b.Fatal(err)
			}
			buf.Reset()
			if err := json.Compact(&buf, raw); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkSplitProcess measures the worker's per-event path (Split, then Process for each event)
// on the same body.
func BenchmarkSplitProcess(b *testing.B) {
	body := incidentBody(b, 2000)
	p, err := NewProcessor(Options{Service: config.ServiceIncidentEvents})
	if err != nil {
		b.Fatal(err)
	}
	poll := time.Now()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		err := jsonscan.Split(bytes.NewReader(body), jsonscan.ShapeArray, func(raw []byte) error {
			return p.Process(raw, poll, func(Event) error { return nil })
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSplitLookupProcessFound measures the worker's per-event path since the key and time
// fields are found while splitting (SplitLookup, then ProcessFound for each event) on the body
// of BenchmarkSplitProcess.
func BenchmarkSplitLookupProcessFound(b *testing.B) {
	body := incidentBody(b, 2000)
	p, err := NewProcessor(Options{Service: config.ServiceIncidentEvents})
	if err != nil {
		b.Fatal(err)
	}
	poll := time.Now()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		err := jsonscan.SplitLookup(bytes.NewReader(body), jsonscan.ShapeArray, p.Fields(), func(raw []byte, vals [][]byte) error {
			return p.ProcessFound(raw, vals, poll, func(Event) error { return nil })
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProcessStatusFlatten measures flattening the composite /status sample.
func BenchmarkProcessStatusFlatten(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("testdata", "status-apiguide6-cleaned", "response.json"))
	if err != nil {
		b.Fatal(err)
	}
	p, err := NewProcessor(Options{Service: config.ServiceStatus, Flatten: true})
	if err != nil {
		b.Fatal(err)
	}
	poll := time.Now()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Process(body, poll, func(Event) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// breachStream generates a synthetic /modelbreaches response body of about size bytes, one
// indented breach at a time (the sekoia sample, ~12.5 KB, with a varying pbid and time), never
// holding more than one breach.
type breachStream struct {
	parts   [3][]byte // before pbid, between pbid and time, after time
	size    int64
	emitted int64
	n       int64
	cur     []byte
	off     int
	done    bool
}

func newBreachStream(tb testing.TB, size int64) *breachStream {
	tb.Helper()
	sample, err := os.ReadFile(filepath.Join("testdata", "modelbreaches-sekoia", "response.json"))
	if err != nil {
		tb.Fatal(err)
	}
	sample = bytes.TrimSpace(sample)
	elem := bytes.TrimSpace(sample[1 : len(sample)-1])
	pb := bytes.Index(elem, []byte(`"pbid": 25808`))
	tm := bytes.Index(elem, []byte(`"time": 1687774142000`))
	if pb < 0 || tm < pb {
		tb.Fatal("sample fields not found")
	}
	s := &breachStream{size: size}
	s.parts[0] = elem[:pb+len(`"pbid": `)]
	s.parts[1] = elem[pb+len(`"pbid": 25808`) : tm+len(`"time": `)]
	s.parts[2] = elem[tm+len(`"time": 1687774142000`):]
	s.cur = []byte("[\n  ")
	return s
}

// next prepares the next chunk: a breach, or the closing bracket once size is reached.
func (s *breachStream) next() {
	s.off = 0
	if s.emitted >= s.size {
		s.cur = append(s.cur[:0], "\n]\n"...)
		s.done = true
		return
	}
	b := s.cur[:0]
	if s.n > 0 {
		b = append(b, ",\n  "...)
	}
	b = append(b, s.parts[0]...)
	b = strconv.AppendInt(b, 1_000_000+s.n, 10)
	b = append(b, s.parts[1]...)
	b = strconv.AppendInt(b, 1687774142000+s.n*1000, 10)
	b = append(b, s.parts[2]...)
	s.cur = b
	s.n++
}

func (s *breachStream) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if s.off == len(s.cur) {
			if s.done {
				break
			}
			s.next()
		}
		c := copy(p[n:], s.cur[s.off:])
		s.off += c
		s.emitted += int64(c)
		n += c
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// heapSampler records the high-water mark of in-use heap (objects plus unused space in
// in-use spans, i.e. MemStats.HeapInuse) by sampling runtime/metrics on a ticker.
type heapSampler struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	peak     uint64
}

func startHeapSampler(every time.Duration) *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	read := func() {
		metrics.Read(samples)
		v := samples[0].Value.Uint64() + samples[1].Value.Uint64()
		h.mu.Lock()
		h.peak = max(h.peak, v)
		h.mu.Unlock()
	}
	read()
	h.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				read()
				return
			case <-t.C:
				read()
			}
		}
	})
	return h
}

// Stop ends sampling and returns the peak in bytes. It may be called more than once.
func (h *heapSampler) Stop() uint64 {
	h.stopOnce.Do(func() { close(h.stop) })
	h.wg.Wait()
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peak
}

// BenchmarkSplitModelbreaches500MB streams a synthetic 500 MB /modelbreaches response through
// Split and Process (the worker's per-event path) and reports the peak in-use heap, which must
// stay far below the body's size (target: < 64 MB), plus the throughput. Run it with:
//
//	go test ./worker/events/ -run '^$' -bench BenchmarkSplitModelbreaches500MB -benchtime 1x
func BenchmarkSplitModelbreaches500MB(b *testing.B) {
	if testing.Short() {
		b.Skip("streams 500 MB; skipped under -short")
	}
	const size = 500 << 20
	p, err := NewProcessor(Options{Service: config.ServiceModelBreaches})
	if err != nil {
		b.Fatal(err)
	}
	poll := time.Now()
	runtime.GC()
	h := startHeapSampler(time.Millisecond)
	b.Cleanup(func() { h.Stop() })
	b.SetBytes(size)
	b.ResetTimer()
	events := 0
	for b.Loop() {
		events = 0
		var lastKey string
		err := jsonscan.Split(newBreachStream(b, size), jsonscan.ShapeArray, func(raw []byte) error {
			return p.Process(raw, poll, func(ev Event) error {
				events++
				lastKey = ev.Key
				return nil
			})
		})
		if err != nil {
			b.Fatal(err)
		}
		if want := "mb:" + strconv.Itoa(1_000_000+events-1); lastKey != want {
			b.Fatalf("last key %q, want %q", lastKey, want)
		}
	}
	b.StopTimer()
	peak := h.Stop()
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(events), "events/op")
}
