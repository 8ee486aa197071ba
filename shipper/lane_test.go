package shipper

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

const (
	testInput   = "darktrace"
	testService = config.ServiceModelBreaches
)

// base is the start of slot 1; slot n covers [base+(n-1)h, base+n h).
var base = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).UnixMilli()

func slotWindow(seq uint64) (start, end int64) {
	h := time.Hour.Milliseconds()
	return base + int64(seq-1)*h, base + int64(seq)*h
}

// harness is one lane's bus, in memory, shared by the shippers a test runs.
type harness struct {
	t       *testing.T
	changed *changes
	clock   *clockwork.FakeClock
	cfg     *config.Config
	results *memResults
	checks  *memKV
	dedupe  *memKV
	failed  *memKV
	leases  *memLeases
	// checksPort and dedupePort, when set before start, stand in front of checks and dedupe
	// (a faultyKV around them).
	checksPort  Checkpoints
	dedupePort  DedupeRecords
	resultsPort Results  // when set before start, stands in front of results
	shipper     *Shipper // the last one start built

	mu        sync.Mutex
	delivered []uint64 // slots in the order OnDelivered reported them
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	y := `
outputs: {console_1: {type: console}}
shipper: {lease_ttl_in_seconds: 2}
inputs:
  darktrace:
    credentials: {public_token: pub, private_token: priv, instance: "https://dt.example"}
    services:
      modelbreaches: {start_time_in_utc_format: "2024-05-01T00:00:00Z"}
`
	cfg, err := config.Parse([]byte(y), config.LoadOptions{Now: func() time.Time { return time.Date(2024, 5, 8, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cfg.Lanes()); n != 1 {
		t.Fatalf("config has %d lanes; want 1", n)
	}
	c := &changes{}
	return &harness{
		t: t, changed: c, clock: clockwork.NewFakeClockAt(time.Date(2024, 5, 8, 0, 0, 0, 0, time.UTC)), cfg: cfg,
		results: newMemResults(c), checks: newMemKV(c), dedupe: newMemKV(c), failed: newMemKV(c), leases: newMemLeases(c),
	}
}

func (h *harness) bus() Bus {
	b := Bus{Results: h.results, Checkpoints: h.checks, Dedupe: h.dedupe, Failed: h.failed, Leases: h.leases}
	if h.checksPort != nil {
		b.Checkpoints = h.checksPort
	}
	if h.dedupePort != nil {
		b.Dedupe = h.dedupePort
	}
	if h.resultsPort != nil {
		b.Results = h.resultsPort
	}
	return b
}

func (h *harness) output(name string, fails int) *memOutput {
	return &memOutput{name: name, changed: h.changed, clock: h.clock, fails: fails}
}

// start runs a shipper named id on the harness's bus until the returned stop is called (or the
// test ends); stop waits for Run to return and fails the test if it returned an error.
func (h *harness) start(id string, out *memOutput, reg prometheus.Registerer, opts Options) (stop func()) {
	h.t.Helper()
	return h.startOutput(id, out, reg, opts)
}

// startOutput is start with any output.
func (h *harness) startOutput(id string, out devo.Output, reg prometheus.Registerer, opts Options) (stop func()) {
	h.t.Helper()
	opts.ID, opts.Clock, opts.Registerer, opts.Outputs = id, h.clock, reg, []devo.Output{out}
	opts.OnDelivered = func(d proto.Done, _ int) {
		h.mu.Lock()
		h.delivered = append(h.delivered, d.Seq)
		h.mu.Unlock()
	}
	s, err := New(h.bus(), h.cfg, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.shipper = s
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				h.t.Errorf("shipper %s: Run = %v", id, err)
			}
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// waitFor waits until cond holds, re-checking it on every change of the fakes, and fails the
// test when it does not hold within 10 seconds.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		ch := h.changed.wait()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// checkpoint reads the lane's delivery checkpoint (zero when none).
func (h *harness) checkpoint() proto.Delivery {
	var st proto.Delivery
	v, _, err := h.checks.Get(context.Background(), proto.LaneKey(testInput, testService))
	if err == nil {
		if err := proto.Decode(v, &st); err != nil {
			h.t.Fatal(err)
		}
	}
	return st
}

func (h *harness) waitDelivered(seq uint64) {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("the checkpoint to reach slot %d", seq), func() bool { return h.checkpoint().Seq >= seq })
}

func (h *harness) deliveredSlots() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]uint64(nil), h.delivered...)
}

// msg is the event message of key in the tests' slots.
func msg(key string) string { return `{"pbid":"` + key + `"}` }

// publish stores slot seq's result (its events, in chunks of at most perChunk) and then its done
// marker, as a worker does, and waits until a watcher has been handed the marker when one runs.
func (h *harness) publish(seq uint64, perChunk int, keys ...string) {
	h.t.Helper()
	start, end := slotWindow(seq)
	d := proto.Done{V: proto.SchemaVersion, SlotID: fmt.Sprintf("slot-%d", seq), Input: testInput, Service: testService,
		Seq: seq, Attempt: "a1", Start: start, End: end, Epoch: 1, Events: len(keys)}
	for i := 0; i == 0 || i*perChunk < len(keys); i++ {
		ch := proto.Chunk{V: proto.SchemaVersion, SlotID: d.SlotID, Seq: seq, Index: i}
		for j, k := range keys[i*perChunk : min((i+1)*perChunk, len(keys))] {
			ch.Events = append(ch.Events, proto.Event{K: k, T: start + int64(i*perChunk+j), D: []byte(msg(k))})
		}
		h.results.publishChunk(proto.ChunkSubject(testInput, testService, seq, d.Attempt, i), proto.AppendChunk(nil, &ch))
		d.Chunks++
	}
	h.publishDone(d)
}

// publishFailed stores the marker of a slot that failed for good.
func (h *harness) publishFailed(seq uint64) {
	h.t.Helper()
	start, end := slotWindow(seq)
	h.publishDone(proto.Done{V: proto.SchemaVersion, SlotID: fmt.Sprintf("slot-%d", seq), Input: testInput, Service: testService,
		Seq: seq, Attempt: "a1", Start: start, End: end, Epoch: 1, Failed: true, Error: "PullError(300): INPUT ERROR"})
}

func (h *harness) publishDone(d proto.Done) {
	h.t.Helper()
	data, err := proto.Encode(&d)
	if err != nil {
		h.t.Fatal(err)
	}
	h.results.publishMarker(proto.DoneSubject(d.Input, d.Service, d.Seq), data)
}

func msgs(keys ...string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = msg(k)
	}
	return out
}

// metricValue reads one sample from reg; labels must match the sample's labels exactly.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			if fmt.Sprint(got) != fmt.Sprint(labels) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no sample %s%v", name, labels)
	return 0
}

// TestLaneDeliversInSequence publishes slots in several orders; the output must receive them in
// sequence order, and nothing before slot 1 arrived.
func TestLaneDeliversInSequence(t *testing.T) {
	t.Parallel()
	keys := map[uint64][]string{1: {"a1", "a2"}, 2: {"b1", "b2", "b3"}, 3: {"c1"}, 4: {"d1", "d2"}}
	want := msgs("a1", "a2", "b1", "b2", "b3", "c1", "d1", "d2")
	for _, order := range [][]uint64{{4, 3, 2, 1}, {2, 4, 1, 3}, {1, 3, 4, 2}, {1, 2, 3, 4}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			out := h.output("out", 0)
			// One slot per batch at most, so that a lane that delivered out of order would do so in
			// separate batches as well as inside one.
			stop := h.start("s1", out, nil, Options{BatchEvents: 3})
			for i, seq := range order {
				h.publish(seq, 2, keys[seq]...)
				h.waitFor("the marker to reach the lane", func() bool { return h.results.handedCount() == i+1 })
				if !slices.Contains(order[:i+1], 1) && len(out.got()) > 0 {
					t.Fatalf("delivered %v before slot 1 was ready", out.got())
				}
			}
			h.waitDelivered(4)
			stop()
			if got := out.got(); !slices.Equal(got, want) {
				t.Fatalf("output got %v; want %v", got, want)
			}
			if got := h.deliveredSlots(); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
				t.Fatalf("slots delivered in the order %v", got)
			}
			if got := h.results.purgedSeqs(); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
				t.Fatalf("results purged for slots %v; want 1-4 after their delivery", got)
			}
		})
	}
}

// TestDedupeDropsDeliveredKeys delivers overlapping slots (the model-breach look-back), then
// restarts the shipper: keys delivered before, in this process or before the restart, are
// dropped.
func TestDedupeDropsDeliveredKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	out := h.output("out", 0)
	stop := h.start("s1", out, reg, Options{})
	h.publish(1, 10, "k1", "k2", "k3")
	// Slot 2 only once slot 1 is delivered, so the two are not in one batch: the keys must be
	// dropped by the dedupe set, not merely within a batch.
	h.waitDelivered(1)
	h.publish(2, 10, "k2", "k3", "k4")
	h.waitDelivered(2)
	stop()
	if got, want := out.got(), msgs("k1", "k2", "k3", "k4"); !slices.Equal(got, want) {
		t.Fatalf("before the restart the output got %v; want %v", got, want)
	}
	if st := h.checkpoint(); st.Events != 4 || st.Dups != 2 {
		t.Fatalf("checkpoint counts %d events, %d duplicates; want 4 and 2", st.Events, st.Dups)
	}
	lane := map[string]string{"input": testInput, "service": testService}
	if v := metricValue(t, reg, "dtfleet_shipper_events_sent_total", lane); v != 4 {
		t.Fatalf("events_sent_total = %v; want 4", v)
	}
	if v := metricValue(t, reg, "dtfleet_shipper_duplicates_dropped_total", lane); v != 2 {
		t.Fatalf("duplicates_dropped_total = %v; want 2", v)
	}

	// A new process knows only what the bus holds: the checkpoint and the dedupe records.
	out2 := h.output("out", 0)
	h.start("s2", out2, nil, Options{})
	h.publish(3, 10, "k3", "k4", "k5")
	h.waitDelivered(3)
	if got, want := out2.got(), msgs("k5"); !slices.Equal(got, want) {
		t.Fatalf("after the restart the output got %v; want %v", got, want)
	}
}

// TestHandOverResumesFromCheckpoint stops the lane's leader; the standby takes the lease over,
// resumes after the last confirmed batch and resends none of it.
func TestHandOverResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	leaseKey := proto.ShipperLease(testInput, testService)
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	outA, outB := h.output("devo_1", 0), h.output("devo_1", 0)
	stopA := h.start("A", outA, regA, Options{BatchEvents: 2})
	h.waitFor("A to lead the lane", func() bool { return h.leases.holder(leaseKey) == "A" })
	h.start("B", outB, regB, Options{BatchEvents: 2})
	// Slot 2 spans two batches: the checkpoint also records a slot's progress inside it.
	h.publish(1, 10, "k1", "k2")
	h.publish(2, 1, "k3", "k4", "k5")
	h.waitDelivered(2)
	leader := map[string]string{"role": "shipper", "lane": testInput + "." + testService}
	if v := metricValue(t, regA, "dtfleet_role_leader", leader); v != 1 {
		t.Fatalf("A's leader gauge = %v while it leads; want 1", v)
	}
	if v := metricValue(t, regA, "dtfleet_shipper_batches_confirmed_total", map[string]string{"output": "devo_1"}); v != 3 {
		t.Fatalf("A's batches_confirmed_total = %v; want 3", v)
	}
	stopA()
	if v := metricValue(t, regA, "dtfleet_role_leader", leader); v != 0 {
		t.Fatalf("A's leader gauge = %v after it stopped; want 0", v)
	}
	h.waitFor("B to take the lane over", func() bool { return h.leases.holder(leaseKey) == "B" })
	h.publish(3, 10, "k6")
	h.waitDelivered(3)
	if got, want := outA.got(), msgs("k1", "k2", "k3", "k4", "k5"); !slices.Equal(got, want) {
		t.Fatalf("A delivered %v; want %v", got, want)
	}
	if got, want := outB.got(), msgs("k6"); !slices.Equal(got, want) {
		t.Fatalf("B delivered %v; want only %v", got, want)
	}
	if v := metricValue(t, regB, "dtfleet_role_leader", leader); v != 1 {
		t.Fatalf("B's leader gauge = %v while it leads; want 1", v)
	}
}

// TestRetriesWithBackoff fails the output's first three Sends: the lane retries the same batch
// after waits of 1 s, 2 s and 4 s on its clock, and the batch is delivered once.
func TestRetriesWithBackoff(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.output("out", 3)
	start := h.clock.Now()
	h.start("s1", out, nil, Options{Backoff: func() backoff.BackOff {
		return &backoff.ExponentialBackOff{InitialInterval: time.Second, Multiplier: 2, MaxInterval: time.Minute}
	}})
	h.publish(1, 10, "k1", "k2")
	// Move the clock in small steps whenever the lane waits to retry (its ticker is one waiter,
	// the retry timer the second), until the fourth attempt: the attempts then fall on the
	// policy's waits, not on the steps.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wctx, wcancel := context.WithCancel(ctx)
	go func() {
		defer wcancel()
		for {
			ch := h.changed.wait()
			if len(out.sendTimes()) >= 4 {
				return
			}
			select {
			case <-ch:
			case <-wctx.Done():
				return
			}
		}
	}()
	for h.clock.BlockUntilContext(wctx, 2) == nil {
		h.clock.Advance(250 * time.Millisecond)
	}
	if ctx.Err() != nil {
		t.Fatalf("the lane did not retry to success: attempts at %v", out.sendTimes())
	}
	h.waitDelivered(1)
	var offsets []time.Duration
	for _, at := range out.sendTimes() {
		offsets = append(offsets, at.Sub(start))
	}
	if want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second}; !slices.Equal(offsets, want) {
		t.Fatalf("attempts at %v on the clock; want %v", offsets, want)
	}
	if got, want := out.got(), msgs("k1", "k2"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v once", got, want)
	}
}

// TestFailedSlotIsPassedOver puts a slot that failed for good between two good ones: the lane
// passes it over, counts it, and delivers the next.
func TestFailedSlotIsPassedOver(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.output("out", 0)
	h.start("s1", out, nil, Options{})
	h.publish(1, 10, "k1")
	h.publishFailed(2)
	h.publish(3, 10, "k3")
	h.waitDelivered(3)
	if got, want := out.got(), msgs("k1", "k3"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v", got, want)
	}
	if st := h.checkpoint(); st.Failed != 1 || st.Events != 2 {
		t.Fatalf("checkpoint counts %d failed slots, %d events; want 1 and 2", st.Failed, st.Events)
	}
	if got := h.deliveredSlots(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("slots passed in the order %v; want [1 2 3]", got)
	}
}

// TestMetricsOnOneRegistry builds two shippers on one registry: the second shares the first's
// metrics instead of failing on a duplicate registration.
func TestMetricsOnOneRegistry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	for _, id := range []string{"a", "b"} {
		if _, err := New(h.bus(), h.cfg, Options{ID: id, Registerer: reg, Clock: h.clock, Outputs: []devo.Output{h.output("out", 0)}}); err != nil {
			t.Fatalf("shipper %s: %v", id, err)
		}
	}
}

// TestForcedReplaysBackToBack: two `replay --force` runs of the same range, with no regular slot
// between them, each deliver the range again; inside one run, keys that overlapping windows
// return twice are delivered once.
func TestForcedReplaysBackToBack(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.output("out", 0)
	h.start("s1", out, nil, Options{})
	h.publish(1, 10, "k1", "k2")
	h.publish(2, 10, "k3")
	h.publish(3, 10, "k9")
	h.waitDelivered(3)
	forced := func(seq, windowSeq uint64, keys ...string) {
		start, end := slotWindow(windowSeq)
		d := proto.Done{V: proto.SchemaVersion, SlotID: fmt.Sprintf("replay-%d", seq), Input: testInput, Service: testService,
			Seq: seq, Attempt: "a1", Start: start, End: end, Epoch: 1, Events: len(keys), Force: true, Replay: true, Chunks: 1}
		ch := proto.Chunk{V: proto.SchemaVersion, SlotID: d.SlotID, Seq: seq}
		for i, k := range keys {
			ch.Events = append(ch.Events, proto.Event{K: k, T: start + int64(i), D: []byte(msg(k))})
		}
		h.results.publishChunk(proto.ChunkSubject(testInput, testService, seq, d.Attempt, 0), proto.AppendChunk(nil, &ch))
		h.publishDone(d)
	}
	// First replay of windows 1-2 (slots 4, 5); k2 comes again in the second window's look-back.
	forced(4, 1, "k1", "k2")
	forced(5, 2, "k2", "k3")
	// Second replay of the same range, right after (slots 6, 7).
	forced(6, 1, "k1", "k2")
	forced(7, 2, "k2", "k3")
	h.waitDelivered(7)
	want := msgs("k1", "k2", "k3", "k9", "k1", "k2", "k3", "k1", "k2", "k3")
	if got := out.got(); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v (each replay delivers the range once)", got, want)
	}
	// The replays of old windows do not move the lane's delivered end back.
	if _, end := slotWindow(3); h.checkpoint().End != end {
		t.Fatalf("checkpoint end %d after the replays; want %d, the end of the newest slot delivered", h.checkpoint().End, end)
	}
}
