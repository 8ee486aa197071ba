package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// endpoints opens the worker's endpoints on b, as the fleet wiring does.
func endpoints(t *testing.T, b *bus.Bus) worker.Endpoints {
	t.Helper()
	ctx := context.Background()
	kv := func(bucket string) jetstream.KeyValue {
		t.Helper()
		kv, err := b.KV(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	return worker.Endpoints{Work: b, Results: b.JS, Failures: kv(proto.BucketFailed), Heartbeats: kv(proto.BucketWorkers),
		Rate: kv(proto.BucketRate), MaxPayload: b.MaxPayload()}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// counter is the value of the counter name with labels in reg (0 when it was never counted).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// testConfig is one input with the modelbreaches service only, against instance.
func testConfig(t *testing.T, instance string) *config.Config {
	t.Helper()
	y := fmt.Sprintf(`
outputs: {console_1: {type: console}}
workers: {concurrency: 4}
inputs:
  darktrace:
    requests_per_second: 1000
    credentials: {public_token: %s, private_token: %s, instance: %q}
    services:
      modelbreaches: {look_back_in_minutes: 0}
`, darktracetest.DefaultPublicToken, darktracetest.DefaultPrivateToken, instance)
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runWorker runs a worker until the test ends.
func runWorker(t *testing.T, b *bus.Bus, cfg *config.Config, opts worker.Options) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := worker.New(endpoints(t, b), cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker.Run = %v", err)
		}
	})
}

func publishItem(t *testing.T, b *bus.Bus, seq uint64, start, end time.Time) proto.WorkItem {
	t.Helper()
	it := proto.WorkItem{V: proto.SchemaVersion, Input: "darktrace", Service: config.ServiceModelBreaches, Seq: seq,
		Start: start.UnixMilli(), End: end.UnixMilli(), PersistenceVersion: 1, Epoch: 1, PlannedAt: time.Now().UnixMilli()}
	it.SlotID = proto.SlotID(it.Input, it.Service, it.Start, it.End, it.PersistenceVersion, "e1")
	data, err := proto.Encode(&it)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.JS.Publish(context.Background(), proto.WorkSubject(it.Input, it.Service), data, jetstream.WithMsgID(it.SlotID)); err != nil {
		t.Fatal(err)
	}
	return it
}

// waitDone waits for the slot's done marker.
func waitDone(t *testing.T, b *bus.Bus, seq uint64) proto.Done {
	t.Helper()
	ctx := context.Background()
	s, err := b.JS.Stream(ctx, proto.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := s.GetLastMsgForSubject(ctx, proto.DoneSubject("darktrace", config.ServiceModelBreaches, seq))
		if err == nil {
			var d proto.Done
			if err := proto.Decode(m.Data, &d); err != nil {
				t.Fatal(err)
			}
			return d
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no done marker for slot %d", seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// chunks reads every chunk of one attempt at a slot, in order, with the raw message sizes.
func chunks(t *testing.T, b *bus.Bus, d proto.Done) ([]proto.Chunk, []int) {
	t.Helper()
	ctx := context.Background()
	s, err := b.JS.Stream(ctx, proto.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	var out []proto.Chunk
	var sizes []int
	for i := 0; i < d.Chunks; i++ {
		m, err := s.GetLastMsgForSubject(ctx, proto.ChunkSubject(d.Input, d.Service, d.Seq, d.Attempt, i))
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		var ch proto.Chunk
		if err := proto.ReadChunk(m.Data, m.Header.Get(proto.HeaderEncoding), &ch); err != nil {
			t.Fatal(err)
		}
		out = append(out, ch)
		sizes = append(sizes, len(m.Data))
	}
	return out, sizes
}

// waitSettled waits until the work consumer has nothing pending or unacknowledged.
func waitSettled(t *testing.T, b *bus.Bus) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := b.JS.Consumer(ctx, proto.StreamWork, proto.ConsumerWorkers)
		if err == nil {
			info, err := c.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the work item was not settled")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slowFetcher answers every request with events, after holding the request for hold.
type slowFetcher struct {
	hold   time.Duration
	events [][]byte
	calls  atomic.Int64
}

func (f *slowFetcher) Fetch(ctx context.Context, _ darktrace.Request, fn func([]byte) error) (darktrace.Stats, error) {
	f.calls.Add(1)
	select {
	case <-time.After(f.hold):
	case <-ctx.Done():
		return darktrace.Stats{}, ctx.Err()
	}
	for _, e := range f.events {
		if err := fn(e); err != nil {
			return darktrace.Stats{}, err
		}
	}
	return darktrace.Stats{}, nil
}

func breach(pbid int, at time.Time, pad int) []byte {
	return fmt.Appendf(nil, `{"pbid":%d,"time":%d,"creationTime":%d,"pad":"%s"}`, pbid, at.UnixMilli(), at.UnixMilli(), strings.Repeat("x", pad))
}

// TestLongFetchIsNotRedelivered: a fetch that outlives the consumer's AckWait several times
// sends in-progress acks, so no other worker starts the same slot (a redelivery storm).
func TestLongFetchIsNotRedelivered(t *testing.T) {
	b := bustest.New(t)
	cfg := testConfig(t, "https://dt.example")
	now := time.Now().UTC().Truncate(time.Hour)
	f := &slowFetcher{hold: 2 * time.Second, events: [][]byte{breach(1, now.Add(-50*time.Minute), 10)}}
	reg := prometheus.NewRegistry()
	runWorker(t, b, cfg, worker.Options{Fetchers: map[string]worker.Fetcher{"darktrace": f}, AckWait: 300 * time.Millisecond, Registerer: reg})
	publishItem(t, b, 1, now.Add(-time.Hour), now)
	d := waitDone(t, b, 1)
	if d.Failed || d.Events != 1 {
		t.Fatalf("done marker %+v; want one event", d)
	}
	waitSettled(t, b)
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("a slot whose fetch outlived AckWait was fetched %d times, want once", n)
	}
	lane := map[string]string{"input": "darktrace", "service": config.ServiceModelBreaches}
	waitFor(t, "the fetched slot to be counted", func() bool {
		return counter(t, reg, "dtfleet_worker_slots_total", map[string]string{"input": "darktrace", "service": config.ServiceModelBreaches, "result": "fetched"}) == 1
	})
	if n := counter(t, reg, "dtfleet_worker_events_received_total", lane); n != 1 {
		t.Errorf("dtfleet_worker_events_received_total = %v, want 1", n)
	}
	if n := counter(t, reg, "dtfleet_worker_slots_total", map[string]string{"result": "failed"}); n != 0 {
		t.Errorf("dtfleet_worker_slots_total{result=failed} = %v, want 0", n)
	}
}

// TestBigResultIsChunked: a result far over the server's max payload travels in chunks that
// each fit it, an event bigger than a chunk in parts, and the events come out in time order.
func TestBigResultIsChunked(t *testing.T) {
	b := bustest.New(t)
	cfg := testConfig(t, "https://dt.example")
	maxPayload := b.MaxPayload()
	now := time.Now().UTC().Truncate(time.Hour)
	var evs [][]byte
	for i := range 40 {
		// Unsorted on purpose: the worker sorts a slot by event time.
		evs = append(evs, breach(100+i, now.Add(-time.Duration((i*37)%60)*time.Minute), 64<<10))
	}
	huge := breach(1, now.Add(-30*time.Minute), 2*maxPayload+12345)
	evs = append(evs, huge)
	f := &slowFetcher{events: evs}
	runWorker(t, b, cfg, worker.Options{Fetchers: map[string]worker.Fetcher{"darktrace": f}})
	publishItem(t, b, 1, now.Add(-time.Hour), now)
	d := waitDone(t, b, 1)
	if d.Failed || d.Events != len(evs) {
		t.Fatalf("done marker %+v; want %d events", d, len(evs))
	}
	chs, sizes := chunks(t, b, d)
	if len(chs) < 4 {
		t.Fatalf("%d chunks for %d MB; want it split", len(chs), (len(evs)*64<<10+len(huge))>>20)
	}
	for i, n := range sizes {
		if n > maxPayload {
			t.Errorf("chunk %d is %d bytes, over the max payload %d", i, n, maxPayload)
		}
	}
	var (
		got   [][]byte
		times []int64
		part  []byte
	)
	for _, ch := range chs {
		for _, e := range ch.Events {
			part = append(part, e.D...)
			if e.More {
				continue
			}
			got, times, part = append(got, part), append(times, e.T), nil
		}
	}
	if part != nil {
		t.Fatal("the last event ends with a part marked More")
	}
	if len(got) != len(evs) {
		t.Fatalf("reassembled %d events, want %d", len(got), len(evs))
	}
	if !slices.IsSorted(times) {
		t.Errorf("events are not in time order: %v", times)
	}
	found := false
	for _, g := range got {
		if string(g) == string(huge) {
			found = true
		}
	}
	if !found {
		t.Error("the event bigger than a chunk did not come out whole")
	}
}

// fakeAppliance is a fake Darktrace with one day of data ending an hour ago.
func fakeAppliance(t *testing.T, faults darktracetest.Faults) (*darktracetest.Server, time.Time) {
	t.Helper()
	end := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 3, Start: end.Add(-24 * time.Hour), End: end, EventSize: 500,
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: 30}, Faults: faults})
	t.Cleanup(fake.Close)
	return fake, end
}

// TestTerminalFailureIsRecorded: an INPUT ERROR is not retried; the slot leaves a failure
// record and a failed done marker (so the shipper passes over it), and its item is terminated.
func TestTerminalFailureIsRecorded(t *testing.T) {
	b := bustest.New(t)
	fake, end := fakeAppliance(t, darktracetest.Faults{})
	from := end.Add(-2 * time.Hour)
	fake.SetInputError(config.ServiceModelBreaches, from, from.Add(time.Hour), true)
	reg := prometheus.NewRegistry()
	runWorker(t, b, testConfig(t, fake.URL), worker.Options{Backoff: darktrace.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}, Registerer: reg})
	publishItem(t, b, 1, from, from.Add(time.Hour))
	d := waitDone(t, b, 1)
	if !d.Failed || !strings.Contains(d.Error, "INPUT ERROR") {
		t.Fatalf("done marker %+v; want a failure naming INPUT ERROR", d)
	}
	waitSettled(t, b)
	if n := fake.EndpointRequests("/modelbreaches"); n != 1 {
		t.Errorf("a terminal failure was requested %d times, want once", n)
	}
	waitFor(t, "the failed slot to be counted", func() bool {
		return counter(t, reg, "dtfleet_worker_slots_total", map[string]string{"input": "darktrace", "service": config.ServiceModelBreaches, "result": "failed"}) == 1
	})
	kv, err := b.KV(context.Background(), proto.BucketFailed)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), proto.FailedKey("darktrace", config.ServiceModelBreaches, from.UnixMilli(), from.Add(time.Hour).UnixMilli()))
	if err != nil {
		t.Fatalf("no failure record: %v", err)
	}
	var rec proto.Failure
	if err := proto.Decode(e.Value(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 1 || !strings.Contains(rec.Error, "INPUT ERROR") {
		t.Errorf("failure record %+v", rec)
	}
	if strings.Contains(rec.Error, darktracetest.DefaultPrivateToken) || strings.Contains(d.Error, darktracetest.DefaultPrivateToken) {
		t.Error("the private token is in a NATS message")
	}
}

// TestRetryableFailuresAreRetried: 5xx, 429 and a reset are retried (Nak with delay) until the
// slot succeeds with every event of its window.
func TestRetryableFailuresAreRetried(t *testing.T) {
	b := bustest.New(t)
	fake, end := fakeAppliance(t, darktracetest.Faults{Script: []darktracetest.Fault{
		{Kind: darktracetest.FaultStatus, Status: 503},
		{Kind: darktracetest.FaultRateLimit, RetryAfter: 100 * time.Millisecond},
		{Kind: darktracetest.FaultReset, AfterEvents: 3},
	}})
	from := end.Add(-3 * time.Hour)
	runWorker(t, b, testConfig(t, fake.URL), worker.Options{Backoff: darktrace.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	publishItem(t, b, 1, from, from.Add(time.Hour))
	d := waitDone(t, b, 1)
	want := len(breachesCreatedIn(t, fake, from, from.Add(time.Hour))) // testConfig has no look-back
	if d.Failed || d.Events != want || want == 0 {
		t.Fatalf("done marker %+v; want %d events", d, want)
	}
	waitSettled(t, b)
	if n := fake.EndpointRequests("/modelbreaches"); n != 4 {
		t.Errorf("%d requests, want 4 (three faults, then success)", n)
	}
	if d.Attempt != "4" {
		t.Errorf("the successful attempt is %q, want the 4th delivery", d.Attempt)
	}
}

// TestShutdownFinishesInFlightSlots: when its context ends, a worker lets an in-flight slot
// finish (within the grace period) and publishes its result instead of abandoning it.
func TestShutdownFinishesInFlightSlots(t *testing.T) {
	b := bustest.New(t)
	cfg := testConfig(t, "https://dt.example")
	now := time.Now().UTC().Truncate(time.Hour)
	f := &slowFetcher{hold: 500 * time.Millisecond, events: [][]byte{breach(1, now.Add(-10*time.Minute), 10)}}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := worker.New(endpoints(t, b), cfg, worker.Options{Fetchers: map[string]worker.Fetcher{"darktrace": f}, ShutdownGrace: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() { defer wg.Done(); runErr = w.Run(ctx) }()
	publishItem(t, b, 1, now.Add(-time.Hour), now)
	deadline := time.Now().Add(30 * time.Second)
	for f.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slot was never fetched")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatal(runErr)
	}
	// Run returned after the in-flight slot finished: its marker is there already.
	s, err := b.JS.Stream(context.Background(), proto.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLastMsgForSubject(context.Background(), proto.DoneSubject("darktrace", config.ServiceModelBreaches, 1)); err != nil {
		t.Fatalf("the in-flight slot was abandoned at shutdown: %v", err)
	}
}

// TestNewRejectsMissingEndpointsAndTakenMetrics: a worker without one of its bus endpoints, or
// whose metrics are already registered in the registerer (a second worker in one process sharing
// a registry), is refused when it is built rather than failing later.
func TestNewRejectsMissingEndpointsAndTakenMetrics(t *testing.T) {
	b := bustest.New(t)
	cfg := testConfig(t, "https://dt.example")
	fetchers := map[string]worker.Fetcher{"darktrace": &slowFetcher{}}
	full := endpoints(t, b)
	for name, edit := range map[string]func(*worker.Endpoints){
		"work":       func(e *worker.Endpoints) { e.Work = nil },
		"results":    func(e *worker.Endpoints) { e.Results = nil },
		"failures":   func(e *worker.Endpoints) { e.Failures = nil },
		"heartbeats": func(e *worker.Endpoints) { e.Heartbeats = nil },
	} {
		ep := full
		edit(&ep)
		if _, err := worker.New(ep, cfg, worker.Options{Fetchers: fetchers}); err == nil {
			t.Errorf("New without the %s endpoint succeeded", name)
		}
	}
	noRate := full
	noRate.Rate = nil
	if _, err := worker.New(noRate, cfg, worker.Options{}); err == nil {
		t.Error("New without the rate bucket and without fetchers succeeded (it needs the bucket for its limiters)")
	}
	reg := prometheus.NewRegistry()
	if _, err := worker.New(full, cfg, worker.Options{Fetchers: fetchers, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.New(full, cfg, worker.Options{Fetchers: fetchers, Registerer: reg}); err == nil {
		t.Error("a second worker registered the same metrics in one registry")
	}
	if _, err := worker.New(full, cfg, worker.Options{Fetchers: fetchers}); err != nil {
		t.Errorf("New with a nil registerer = %v", err)
	}
}

// breachesCreatedIn returns the breaches whose creationTime is in [start, end]: what a
// creationtime=true window returns (the fake creates a tidy breach at most an hour late).
func breachesCreatedIn(t *testing.T, fake *darktracetest.Server, start, end time.Time) [][]byte {
	t.Helper()
	var out [][]byte
	for _, raw := range fake.Events(config.ServiceModelBreaches, start.Add(-2*time.Hour), end) {
		var b struct {
			CreationTime int64 `json:"creationTime"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		if b.CreationTime >= start.UnixMilli() && b.CreationTime <= end.UnixMilli() {
			out = append(out, raw)
		}
	}
	return out
}

// TestTokenCheckUsesAnEnabledService: the start-up token check calls a service the input runs
// (here only modelbreaches, with a window of the last minute), never /summarystatistics or
// another service that is off, so a token without the summary permission starts the fleet.
// A refused token is reported by the same call.
func TestTokenCheckUsesAnEnabledService(t *testing.T) {
	b := bustest.New(t)
	fake, _ := fakeAppliance(t, darktracetest.Faults{})
	w, err := worker.New(endpoints(t, b), testConfig(t, fake.URL), worker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.CheckInputs(t.Context()); err != nil {
		t.Fatalf("CheckInputs = %v", err)
	}
	for path, want := range map[string]int64{"/modelbreaches": 1, "/summarystatistics": 0, "/status": 0, "/antigena": 0, "/aianalyst/incidentevents": 0} {
		if n := fake.EndpointRequests(path); n != want {
			t.Errorf("%s requested %d times by the token check, want %d", path, n, want)
		}
	}
	fake.AddFault(darktracetest.Fault{Kind: darktracetest.FaultForbidden})
	if err := w.CheckInputs(t.Context()); err == nil {
		t.Fatal("CheckInputs accepted a token the appliance refused (403)")
	}
}
