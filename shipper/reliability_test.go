package shipper

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/dtfleet/dtfleet/proto"
)

// everySecond is a retry policy that waits one second (on the harness's clock) between attempts.
func everySecond() backoff.BackOff { return backoff.NewConstantBackOff(time.Second) }

// TestConfirmedBatchIsRecordedWithoutResending (issue 9, row 2): the dedupe record or checkpoint
// write fails after the output confirmed a batch. Only the failed write is retried, after the
// policy's wait each time; the output receives the batch exactly once, and the checkpoint moves
// only once both writes succeeded.
func TestConfirmedBatchIsRecordedWithoutResending(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                    string
		dedupeFails, checkFails int
	}{
		{"dedupe record", 3, 0},
		{"checkpoint", 0, 3},
		{"both", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			dd := &faultyKV{memKV: h.dedupe, failPuts: tc.dedupeFails}
			ck := &faultyKV{memKV: h.checks, failWrites: tc.checkFails}
			h.dedupePort, h.checksPort = dd, ck
			out := h.output("out", 0)
			h.start("s1", out, nil, Options{Backoff: everySecond})
			h.publish(1, 10, "k1", "k2")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			attempts := func() int {
				_, puts, _ := dd.counts()
				_, _, writes := ck.counts()
				return puts + writes
			}
			for i := range tc.dedupeFails + tc.checkFails {
				// While the lane waits to retry a write, its clock has two waiters: the lane's
				// ticker and the retry's timer.
				if err := h.clock.BlockUntilContext(ctx, 2); err != nil {
					t.Fatalf("the lane did not wait to retry failed write %d: %d write attempts, %d batches sent",
						i+1, attempts(), out.batchCount())
				}
				// The i+1 failed attempts so far, plus the dedupe record's success once its
				// failures are over: no attempt before the wait elapsed.
				want := i + 1
				if i >= tc.dedupeFails {
					want++
				}
				if n := attempts(); n != want {
					t.Fatalf("%d write attempts before wait %d elapsed; want %d", n, i+1, want)
				}
				if n := out.batchCount(); n != 1 {
					t.Fatalf("the output received %d batches while the writes failed; want 1", n)
				}
				if st := h.checkpoint(); st.Seq != 0 {
					t.Fatalf("the checkpoint moved to slot %d before the writes succeeded", st.Seq)
				}
				h.clock.Advance(time.Second)
			}
			h.waitDelivered(1)
			if got, want := out.got(), msgs("k1", "k2"); !slices.Equal(got, want) || out.batchCount() != 1 {
				t.Fatalf("output got %v in %d batches; want %v once", got, out.batchCount(), want)
			}
			_, puts, _ := dd.counts()
			_, _, writes := ck.counts()
			if puts != tc.dedupeFails+1 || writes != tc.checkFails+1 {
				t.Fatalf("%d dedupe puts and %d checkpoint writes; want %d and %d", puts, writes, tc.dedupeFails+1, tc.checkFails+1)
			}
			if n := len(h.dedupe.keys()); n != 1 {
				t.Fatalf("%d dedupe records stored; want the batch's one", n)
			}
			if st := h.checkpoint(); st.Events != 2 {
				t.Fatalf("the checkpoint counts %d events; want 2", st.Events)
			}
		})
	}
}

// TestLaneStartRetriesCheckpointRead (issue 9, row 8): the lane's first two checkpoint reads
// time out. The lane retries them after the policy's waits instead of ending the shipper's Run
// (the harness fails the test if Run returns an error), then delivers.
func TestLaneStartRetriesCheckpointRead(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ck := &faultyKV{memKV: h.checks, failGets: 2}
	h.checksPort = ck
	out := h.output("out", 0)
	h.start("s1", out, nil, Options{Backoff: everySecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 2 {
		// Before the lane started, the retry's timer is the one waiter on its clock.
		if err := h.clock.BlockUntilContext(ctx, 1); err != nil {
			gets, _, _ := ck.counts()
			t.Fatalf("the lane did not wait to retry its checkpoint read (%d reads)", gets)
		}
		if gets, _, _ := ck.counts(); gets != i+1 {
			t.Fatalf("%d checkpoint reads before wait %d elapsed; want %d", gets, i+1, i+1)
		}
		h.clock.Advance(time.Second)
	}
	h.publish(1, 10, "k1", "k2")
	h.waitDelivered(1)
	if got, want := out.got(), msgs("k1", "k2"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v", got, want)
	}
}

// TestCheckpointConflictStandsBy (issue 9, row 8): another shipper delivered slot 2 and moved the
// checkpoint (a fail-over) while this one still led the lane. This one's checkpoint write then
// conflicts: it stands by instead of ending Run, leads again from the bus's state, and resends
// nothing beyond the batch in flight: slot 3's key that the other shipper delivered in slot 2 is
// dropped.
func TestCheckpointConflictStandsBy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.output("out", 0)
	h.start("s1", out, nil, Options{Backoff: everySecond})
	h.publish(1, 10, "k1")
	h.waitDelivered(1)

	// The other shipper's delivery of slot 2: its dedupe record, then its checkpoint.
	ctx := context.Background()
	start2, end2 := slotWindow(2)
	rec, err := proto.Encode(&proto.DedupeRecord{V: proto.SchemaVersion, Keys: []string{"k2", "k3"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.dedupe.Put(ctx, proto.DedupeKey(testInput, testService, 1, start2, end2, 2, 0), rec); err != nil {
		t.Fatal(err)
	}
	_, rev, err := h.checks.Get(ctx, proto.LaneKey(testInput, testService))
	if err != nil {
		t.Fatal(err)
	}
	st := h.checkpoint()
	st.Seq, st.End, st.Events = 2, end2, st.Events+2
	data, err := proto.Encode(&st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.checks.Update(ctx, proto.LaneKey(testInput, testService), data, rev); err != nil {
		t.Fatal(err)
	}

	// s1 sends slot 2 (the batch in flight during the fail-over), then finds the checkpoint moved.
	h.publish(2, 10, "k2", "k3")
	h.waitFor("s1 to send slot 2", func() bool { return len(out.got()) == 3 })
	h.publish(3, 10, "k3", "k4")
	h.waitDelivered(3)
	if got, want := out.got(), msgs("k1", "k2", "k3", "k4"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v", got, want)
	}
}

// TestCorruptChunkFailsTheSlot: a slot whose stored chunk does not decode (proto.ErrCorruptChunk:
// the same bytes on every read) is recorded as failed with the error and passed over, and the
// lane delivers the next slot, instead of retrying the chunk for ever.
func TestCorruptChunkFailsTheSlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	out := h.output("out", 0)
	h.start("s1", out, nil, Options{})
	h.publish(1, 10, "k1")
	h.publish(2, 10, "k2a", "k2b")
	start, end := slotWindow(2)
	good := proto.AppendChunk(nil, &proto.Chunk{V: proto.SchemaVersion, SlotID: "slot-2", Seq: 2,
		Events: []proto.Event{{K: "k2a", T: start, D: []byte(msg("k2a"))}}})
	h.results.publishChunk(proto.ChunkSubject(testInput, testService, 2, "a1", 0), good[:len(good)/2])
	h.publish(3, 10, "k3")
	h.waitDelivered(3)
	if got, want := out.got(), msgs("k1", "k3"); !slices.Equal(got, want) {
		t.Fatalf("output got %v; want %v", got, want)
	}
	raw, _, err := h.failed.Get(context.Background(), proto.FailedKey(testInput, testService, start, end))
	if err != nil {
		t.Fatalf("no failure record for the corrupt slot: %v", err)
	}
	var rec proto.Failure
	if err := proto.Decode(raw, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Seq != 2 || !strings.Contains(rec.Error, "corrupt") {
		t.Fatalf("failure record %+v; want seq 2 with the decode error", rec)
	}
	if st := h.checkpoint(); st.Failed != 1 {
		t.Fatalf("checkpoint counts %d failed slots; want 1", st.Failed)
	}
}
