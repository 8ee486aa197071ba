package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/events"
)

// lostAck is a publish future whose acknowledgement never arrives.
type lostAck struct{ msg *nats.Msg }

func (l lostAck) Ok() <-chan *jetstream.PubAck { return nil }
func (l lostAck) Err() <-chan error            { return nil }
func (l lostAck) Msg() *nats.Msg               { return l.msg }

// silentResults accepts every publish and never acknowledges one, as a results stream whose
// leader died mid-publish.
type silentResults struct{}

func (silentResults) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	return lostAck{msg: m}, nil
}

func (silentResults) Publish(context.Context, string, []byte, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return nil, errors.New("not acknowledged")
}

// TestChunkWriterAckTimeout: a chunk whose acknowledgement never arrives does not pin the slot:
// close gives up after ackTimeout on the worker's clock with errAckTimeout (the item is then
// Nak'ed and fetched again), and the publish budget it held is returned on abort.
func TestChunkWriterAckTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	clock := clockwork.NewFakeClock()
	budget := semaphore.NewWeighted(maxPublishBudget)
	it := proto.WorkItem{V: proto.SchemaVersion, SlotID: "s", Input: "darktrace", Service: "modelbreaches", Seq: 1}
	c := newChunkWriter(ctx, clock, silentResults{}, it, "1", 64<<10, budget, &sync.Pool{})
	if err := c.add(events.Event{Key: "k", Time: 1, Data: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.close(); done <- err }()
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("close is not waiting on the clock for the acknowledgement: ", err)
	}
	clock.Advance(ackTimeout)
	select {
	case err := <-done:
		if !errors.Is(err, errAckTimeout) {
			t.Fatalf("close = %v, want errAckTimeout", err)
		}
	case <-ctx.Done():
		t.Fatal("close hung on an acknowledgement that never arrives")
	}
	c.abort()
	if !budget.TryAcquire(maxPublishBudget) {
		t.Fatal("the unacknowledged chunk's budget was not returned")
	}
}
