package shipper

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// heldOutput is a memOutput whose Sends wait until release is called (or their context ends), so
// that a test can look at what the lane does while a Send is under way.
type heldOutput struct {
	*memOutput

	mu      sync.Mutex
	sending bool
	sends   int           // Sends entered
	entered chan struct{} // closed when the first Send is entered
	release chan struct{}
	once    sync.Once
}

func newHeldOutput(h *harness) *heldOutput {
	return &heldOutput{memOutput: h.output("out", 0), entered: make(chan struct{}), release: make(chan struct{})}
}

func (o *heldOutput) Send(ctx context.Context, b *devo.Batch) error {
	o.mu.Lock()
	o.sending = true
	if o.sends == 0 {
		close(o.entered)
	}
	o.sends++
	o.mu.Unlock()
	o.changed.signal()
	defer func() {
		o.mu.Lock()
		o.sending = false
		o.mu.Unlock()
		o.changed.signal()
	}()
	select {
	case <-o.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return o.memOutput.Send(ctx, b)
}

func (o *heldOutput) inSend() (sending bool, sends int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sending, o.sends
}

func (o *heldOutput) releaseAll() { o.once.Do(func() { close(o.release) }) }

// chunkRead is one Chunk call a watchedResults saw, and whether the output was in a Send then.
type chunkRead struct {
	subject  string
	duringTx bool
	failed   bool
}

// watchedResults is a memResults whose reads of slots after the first are delayed until the
// output entered its first Send (so that a read ahead of the lane cannot happen before it), whose
// Chunk calls are recorded with the output's state, and whose first read of each subject in
// failFirst fails with jetstream.ErrMsgNotFound (as a chunk the stream does not hold).
type watchedResults struct {
	*memResults
	out       *heldOutput
	failFirst map[string]bool

	mu    sync.Mutex
	reads []chunkRead
}

func (w *watchedResults) Chunk(ctx context.Context, input, service string, seq uint64, attempt string, index int) ([]byte, string, error) {
	subj := proto.ChunkSubject(input, service, seq, attempt, index)
	if seq > 1 {
		select {
		case <-w.out.entered:
		case <-ctx.Done():
			return nil, "", fmt.Errorf("reading %s: %w", subj, ctx.Err())
		}
	}
	sending, _ := w.out.inSend()
	w.mu.Lock()
	fail := w.failFirst[subj]
	delete(w.failFirst, subj)
	w.reads = append(w.reads, chunkRead{subject: subj, duringTx: sending, failed: fail})
	w.mu.Unlock()
	defer w.changed.signal()
	if fail {
		return nil, "", fmt.Errorf("reading %s: %w", subj, jetstream.ErrMsgNotFound)
	}
	return w.memResults.Chunk(ctx, input, service, seq, attempt, index)
}

// readDuringSend reports whether subj was read while the output was in a Send (and whether that
// read was one made to fail).
func (w *watchedResults) readDuringSend(subj string) (read, failed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.reads {
		if r.subject == subj && r.duringTx {
			return true, r.failed
		}
	}
	return false, false
}

// storeAttempt stores attempt's chunks of slot seq (events keys, at most perChunk a chunk) and
// returns the marker that names them, unpublished.
func (h *harness) storeAttempt(seq uint64, attempt string, perChunk int, keys ...string) proto.Done {
	h.t.Helper()
	start, end := slotWindow(seq)
	d := proto.Done{V: proto.SchemaVersion, SlotID: fmt.Sprintf("slot-%d", seq), Input: testInput, Service: testService,
		Seq: seq, Attempt: attempt, Start: start, End: end, Epoch: 1, Events: len(keys)}
	for i := 0; i == 0 || i*perChunk < len(keys); i++ {
		ch := proto.Chunk{V: proto.SchemaVersion, SlotID: d.SlotID, Seq: seq, Index: i}
		for j, k := range keys[i*perChunk : min((i+1)*perChunk, len(keys))] {
			ch.Events = append(ch.Events, proto.Event{K: k, T: start + int64(i*perChunk+j), D: []byte(msg(k))})
		}
		h.results.publishChunk(proto.ChunkSubject(testInput, testService, seq, attempt, i), proto.AppendChunk(nil, &ch))
		d.Chunks++
	}
	return d
}

// startHeld starts a shipper whose output holds its Sends and whose results are watched; batches
// hold two events at most, so that slot 1 (two events) is a batch of its own.
func startHeld(t *testing.T, failFirst ...string) (*harness, *heldOutput, *watchedResults) {
	h := newHarness(t)
	out := newHeldOutput(h)
	res := &watchedResults{memResults: h.results, out: out, failFirst: map[string]bool{}}
	for _, s := range failFirst {
		res.failFirst[s] = true
	}
	h.resultsPort = res
	h.startOutput("s1", out, nil, Options{BatchEvents: 2})
	// Released before the shipper stops (cleanups run last in, first out), so that a failing
	// test does not leave the lane in a Send.
	t.Cleanup(out.releaseAll)
	return h, out, res
}

func chunkSubject(seq uint64, attempt string, i int) string {
	return proto.ChunkSubject(testInput, testService, seq, attempt, i)
}

// TestReadAheadOverlapsSend holds the output's Send of slot 1's batch: while it is held, the lane
// reads slot 2's chunks (the read-ahead), and once released every event arrives once, in order.
// Without the read-ahead the lane reads nothing while it sends, and the test times out waiting
// for a read during the Send.
func TestReadAheadOverlapsSend(t *testing.T) {
	t.Parallel()
	h, out, res := startHeld(t)
	h.publish(1, 2, "k1", "k2")
	h.publish(2, 2, "k3", "k4", "k5", "k6")
	h.publish(3, 2, "k7")
	h.waitFor("the lane to send slot 1's batch", func() bool { s, n := out.inSend(); return s && n == 1 })
	h.waitFor("a read of slot 2 while slot 1's batch is being sent", func() bool {
		read, _ := res.readDuringSend(chunkSubject(2, "a1", 0))
		return read
	})
	if got := out.got(); len(got) != 0 {
		t.Fatalf("output accepted %v before its first Send was released", got)
	}
	out.releaseAll()
	h.waitDelivered(3)
	if got, want := out.got(), msgs("k1", "k2", "k3", "k4", "k5", "k6", "k7"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v", got, want)
	}
	if st := h.checkpoint(); st.Events != 7 || st.Dups != 0 || st.Failed != 0 {
		t.Fatalf("checkpoint counts %d events, %d duplicates, %d failed; want 7, 0, 0", st.Events, st.Dups, st.Failed)
	}
}

// TestReadAheadDropsReplacedAttempt reads slot 2's attempt a1 ahead while slot 1's batch is held,
// then replaces slot 2's marker by one naming attempt a2 (as a success replaces a failure): only
// a2's events are delivered, none of the a1 chunks read ahead. A read-ahead that served chunks by
// slot and index alone delivers a1's events and fails it.
func TestReadAheadDropsReplacedAttempt(t *testing.T) {
	t.Parallel()
	h, out, res := startHeld(t)
	h.publish(1, 2, "k1", "k2")
	old := h.storeAttempt(2, "a1", 1, "old1", "old2")
	h.publishDone(old)
	repl := h.storeAttempt(2, "a2", 1, "new1", "new2", "new3")
	h.waitFor("a read of slot 2's attempt a1 while slot 1's batch is being sent", func() bool {
		read, _ := res.readDuringSend(chunkSubject(2, "a1", 0))
		return read
	})
	// The marker the lane knows for slot 2 changes under the read-ahead. onMarker keeps the first
	// success, so the replacement is made where the lane keeps its markers.
	h.shipper.runMu.Lock()
	r := h.shipper.runners[0]
	h.shipper.runMu.Unlock()
	r.mu.Lock()
	r.markers[2] = repl
	r.mu.Unlock()
	out.releaseAll()
	h.waitDelivered(2)
	if got, want := out.got(), msgs("k1", "k2", "new1", "new2", "new3"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v (attempt a2's events only)", got, want)
	}
	if st := h.checkpoint(); st.Events != 5 {
		t.Fatalf("checkpoint counts %d events; want 5", st.Events)
	}
}

// TestReadAheadErrorIsReadAgain makes the read-ahead's read of slot 2's first chunk fail as a
// chunk the stream does not hold (jetstream.ErrMsgNotFound, which the lane answers by failing the
// slot as expired): the lane reads the chunk again itself, gets it, and delivers slot 2 once,
// with no failure recorded. Without the read-ahead the lane's own first read gets the error and
// fails the slot, so the test fails (no read during the Send, then slot 2 missing).
func TestReadAheadErrorIsReadAgain(t *testing.T) {
	t.Parallel()
	first := chunkSubject(2, "a1", 0)
	h, out, res := startHeld(t, first)
	h.publish(1, 2, "k1", "k2")
	h.publish(2, 1, "k3", "k4")
	h.waitFor("the failed read of slot 2 while slot 1's batch is being sent", func() bool {
		read, failed := res.readDuringSend(first)
		return read && failed
	})
	out.releaseAll()
	h.waitDelivered(2)
	if got, want := out.got(), msgs("k1", "k2", "k3", "k4"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v once", got, want)
	}
	if st := h.checkpoint(); st.Failed != 0 || st.Events != 4 {
		t.Fatalf("checkpoint counts %d failed slots, %d events; want 0 and 4", st.Failed, st.Events)
	}
	if keys := h.failed.keys(); len(keys) != 0 {
		t.Fatalf("failure records %v after a read-ahead error; want none", keys)
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	var reads int
	for _, r := range res.reads {
		if r.subject == first {
			reads++
		}
	}
	if reads != 2 {
		t.Fatalf("slot 2's first chunk was read %d times; want 2 (the failed read ahead, the lane's own)", reads)
	}
}

// TestReadAheadTake drives a readAhead on its own: it follows the lane's order over slots (a
// failed slot has no chunks), stays within its byte bound, hands over a chunk only under the exact
// key asked for and starts again after any other.
func TestReadAheadTake(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		markers = map[uint64]proto.Done{}
		reads   []string
		changed = &changes{}
	)
	done := func(seq uint64, attempt string, chunks int, failed bool) proto.Done {
		return proto.Done{Input: testInput, Service: testService, Seq: seq, Attempt: attempt, Epoch: 1, Chunks: chunks, Failed: failed}
	}
	marker := func(seq uint64) (proto.Done, bool) {
		mu.Lock()
		defer mu.Unlock()
		d, ok := markers[seq]
		return d, ok
	}
	read := func(_ context.Context, d proto.Done, i int) ([]byte, string, error) {
		subj := chunkSubject(d.Seq, d.Attempt, i)
		mu.Lock()
		reads = append(reads, subj)
		mu.Unlock()
		changed.signal()
		return []byte(subj), "", nil
	}
	// Room for two chunks' bytes: the third is read only once one was taken.
	size := len(chunkSubject(1, "a1", 0))
	a := newReadAhead(2*size, marker, read)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	waitReads := func(n int) []string {
		t.Helper()
		h := &harness{t: t, changed: changed}
		h.waitFor(fmt.Sprintf("%d reads", n), func() bool { mu.Lock(); defer mu.Unlock(); return len(reads) >= n })
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), reads...)
	}

	mu.Lock()
	markers[1] = done(1, "a1", 2, false)
	markers[2] = done(2, "a1", 0, true) // failed: nothing to read
	markers[3] = done(3, "a1", 3, false)
	mu.Unlock()
	// Nothing is read before the lane first asks.
	if _, _, ok := a.take(ctx, markers[1], 0); ok {
		t.Fatal("take served a chunk before anything was read ahead")
	}
	got := waitReads(2)
	if want := []string{chunkSubject(1, "a1", 1), chunkSubject(3, "a1", 0)}; !slices.Equal(got, want) {
		t.Fatalf("read ahead %v; want %v", got, want)
	}
	data, _, ok := a.take(ctx, markers[1], 1)
	if !ok || string(data) != chunkSubject(1, "a1", 1) {
		t.Fatalf("take(1, 1) = %q, %v; want the chunk read ahead", data, ok)
	}
	got = waitReads(3)
	if got[2] != chunkSubject(3, "a1", 1) {
		t.Fatalf("after a take the read-ahead read %s; want slot 3's chunk 1", got[2])
	}
	a.mu.Lock()
	held, limit := a.bytes, a.limit
	a.mu.Unlock()
	if held > limit {
		t.Fatalf("read-ahead holds %d bytes; its bound is %d", held, limit)
	}
	// Slot 3's marker names another attempt now: what was read of a1 is not served.
	mu.Lock()
	markers[3] = done(3, "a2", 3, false)
	mu.Unlock()
	if _, _, ok := a.take(ctx, markers[3], 0); ok {
		t.Fatal("take served attempt a1's chunk for attempt a2")
	}
	got = waitReads(5)
	if want := []string{chunkSubject(3, "a2", 1), chunkSubject(3, "a2", 2)}; !slices.Equal(got[3:5], want) {
		t.Fatalf("after the miss the read-ahead read %v; want %v", got[3:5], want)
	}
	if hits, misses := a.stats(); hits != 1 || misses != 2 {
		t.Fatalf("stats = %d hits, %d misses; want 1 and 2", hits, misses)
	}
}
