package shipper

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/proto"
)

// failureRecord reads the failure record of slot seq's window, failing the test when there is none.
func (h *harness) failureRecord(seq uint64) proto.Failure {
	h.t.Helper()
	start, end := slotWindow(seq)
	raw, _, err := h.failed.Get(context.Background(), proto.FailedKey(testInput, testService, start, end))
	if err != nil {
		h.t.Fatalf("no failure record for slot %d: %v", seq, err)
	}
	var rec proto.Failure
	if err := proto.Decode(raw, &rec); err != nil {
		h.t.Fatal(err)
	}
	return rec
}

// TestExpiredResultsFailTheSlot (issue 9, row 5): a done marker names a chunk the results stream
// no longer holds (its MaxAge passed before delivery: jetstream.ErrMsgNotFound). The slot is
// recorded as failed with an error that says to replay the window, and the lane delivers the next
// slot, instead of retrying the read for ever.
func TestExpiredResultsFailTheSlot(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		expired []int // chunks of slot 2 that expired
	}{
		{"every chunk", []int{0, 1}},
		{"the last chunk", []int{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			out := h.output("out", 0)
			h.publish(1, 10, "k1")
			h.publish(2, 1, "k2a", "k2b")
			for _, i := range tc.expired {
				h.results.mu.Lock()
				delete(h.results.chunks, proto.ChunkSubject(testInput, testService, 2, "a1", i))
				h.results.mu.Unlock()
			}
			h.publish(3, 10, "k3")
			h.start("s1", out, nil, Options{})
			h.waitDelivered(3)
			got := out.got()
			if !slices.Contains(got, msg("k1")) || !slices.Contains(got, msg("k3")) || slices.Contains(got, msg("k2b")) {
				t.Fatalf("output got %v; want k1 and k3 delivered and k2b not", got)
			}
			if rec := h.failureRecord(2); rec.Seq != 2 || rec.Error != errResultsExpired {
				t.Fatalf("failure record %+v; want slot 2 with %q", rec, errResultsExpired)
			}
			if st := h.checkpoint(); st.Failed != 1 {
				t.Fatalf("checkpoint counts %d failed slots; want 1", st.Failed)
			}
		})
	}
}

// TestNewerMarkerWaitsThenFailsTheSlot (issue 9, row 4, shipper side): the only done marker of a
// slot is of a newer schema version (a rolling upgrade). The lane leaves it for a newer shipper
// for newerMarkerWait, then records the slot as failed at its place and delivers the slots after
// it, instead of waiting for ever.
func TestNewerMarkerWaitsThenFailsTheSlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.output("out", 0)
	h.start("s1", out, nil, Options{})
	h.publish(1, 10, "k1")
	start, end := slotWindow(2)
	h.publishDone(proto.Done{V: proto.SchemaVersion + 1, SlotID: "slot-2", Input: testInput, Service: testService,
		Seq: 2, Attempt: "a1", Start: start, End: end, Epoch: 1, Chunks: 1, Events: 1})
	h.publish(3, 10, "k3")
	h.waitFor("the lane to be handed the three markers and deliver slot 1", func() bool {
		return h.results.handedCount() == 3 && h.checkpoint().Seq == 1
	})
	// Within the wait, a newer shipper may still take the lane: nothing is recorded.
	h.clock.Advance(newerMarkerWait / 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if st := h.checkpoint(); st.Seq != 1 {
		t.Fatalf("the checkpoint moved to slot %d within the wait for a newer shipper", st.Seq)
	}
	if keys := h.failed.keys(); len(keys) != 0 {
		t.Fatalf("failure records %v within the wait for a newer shipper", keys)
	}
	h.clock.Advance(newerMarkerWait / 2)
	h.waitDelivered(3)
	if got, want := out.got(), msgs("k1", "k3"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v", got, want)
	}
	rec := h.failureRecord(2)
	if rec.Seq != 2 || !strings.Contains(rec.Error, fmt.Sprintf("version %d", proto.SchemaVersion+1)) {
		t.Fatalf("failure record %+v; want slot 2 naming version %d", rec, proto.SchemaVersion+1)
	}
	if st := h.checkpoint(); st.Failed != 1 || st.End != end+(end-start) {
		t.Fatalf("checkpoint %+v; want 1 failed slot and the end of slot 3", st)
	}
}
