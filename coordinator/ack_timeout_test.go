package coordinator_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bustest"
)

// lostAck is a publish future whose acknowledgement never arrives, as when the stream's leader
// dies between storing a message and acknowledging it.
type lostAck struct{ msg *nats.Msg }

func (l lostAck) Ok() <-chan *jetstream.PubAck { return nil }
func (l lostAck) Err() <-chan error            { return nil }
func (l lostAck) Msg() *nats.Msg               { return l.msg }

// ackedAt is a publish future already acknowledged (published synchronously, so the test does
// not race the real acknowledgements against its fake clock).
type ackedAt struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
}

func (a ackedAt) Ok() <-chan *jetstream.PubAck { return a.ok }
func (a ackedAt) Err() <-chan error            { return nil }
func (a ackedAt) Msg() *nats.Msg               { return a.msg }

// lostAckPublisher stores the first n messages but never acknowledges them; later ones are
// stored and acknowledged at once.
type lostAckPublisher struct {
	js   jetstream.JetStream
	left atomic.Int64
}

func (p *lostAckPublisher) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	ack, err := p.js.PublishMsg(context.Background(), m, opts...)
	if err != nil {
		return nil, err
	}
	if p.left.Add(-1) >= 0 {
		return lostAck{msg: m}, nil
	}
	ok := make(chan *jetstream.PubAck, 1)
	ok <- ack
	return ackedAt{msg: m, ok: ok}, nil
}

// TestPlanRepublishesWhenAcksAreLost: acknowledgements of five work items never arrive. Planning
// does not hang on them: after the publish timeout (on the coordinator's clock) it publishes the
// unacknowledged items again under the same IDs, so the lane ends with every slot stored exactly
// once and nothing left pending.
func TestPlanRepublishesWhenAcksAreLost(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := bustest.New(t)
	cfg := testConfig(t, "2024-05-07T00:00:00Z", "")
	clk := newClock(time.Date(2024, 5, 8, 0, 0, 30, 0, time.UTC))
	pub := &lostAckPublisher{js: b.JS}
	pub.left.Store(5)
	c, err := coordinator.New(ctx, b, pub, cfg, coordinator.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.PlanLane(ctx, lane(t, cfg)) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("PlanLane = %v", err)
			}
			p := plan(t, b, "darktrace.modelbreaches")
			if len(p.Pending) != 0 {
				t.Fatalf("%d slots still pending after planning", len(p.Pending))
			}
			items := workItems(t, b)
			seen := map[uint64]int{}
			for _, it := range items {
				seen[it.Seq]++
			}
			if len(items) != 24 {
				t.Fatalf("work stream holds %d items, want 24", len(items))
			}
			for seq := uint64(1); seq <= 24; seq++ {
				if seen[seq] != 1 {
					t.Fatalf("seq %d stored %d times", seq, seen[seq])
				}
			}
			return
		case <-ctx.Done():
			t.Fatal("planning hung on acknowledgements that never arrive")
		default:
		}
		// Planning waits for the acks on the fake clock; move it past the publish timeout.
		wctx, wcancel := context.WithTimeout(ctx, 50*time.Millisecond)
		if clk.BlockUntilContext(wctx, 1) == nil {
			clk.Advance(time.Minute)
		}
		wcancel()
	}
}
