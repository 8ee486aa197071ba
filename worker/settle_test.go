package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// fakeMsg is a work item delivered for the delivered-th time; it records how it was settled.
type fakeMsg struct {
	data      []byte
	delivered uint64

	mu      sync.Mutex
	settled []string
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: m.delivered}, nil
}
func (m *fakeMsg) Data() []byte         { return m.data }
func (m *fakeMsg) Headers() nats.Header { return nil }
func (m *fakeMsg) Subject() string {
	return proto.WorkSubject("darktrace", config.ServiceModelBreaches)
}
func (m *fakeMsg) Reply() string { return "" }
func (m *fakeMsg) settle(how string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settled = append(m.settled, how)
	return nil
}
func (m *fakeMsg) Ack() error                       { return m.settle("ack") }
func (m *fakeMsg) DoubleAck(context.Context) error  { return m.settle("ack") }
func (m *fakeMsg) Nak() error                       { return m.settle("nak") }
func (m *fakeMsg) NakWithDelay(time.Duration) error { return m.settle("nak") }
func (m *fakeMsg) InProgress() error                { return nil }
func (m *fakeMsg) Term() error                      { return m.settle("term") }
func (m *fakeMsg) TermWithReason(string) error      { return m.settle("term") }
func (m *fakeMsg) how() []string                    { m.mu.Lock(); defer m.mu.Unlock(); return m.settled }

var _ jetstream.Msg = (*fakeMsg)(nil)

// malformedFetcher answers every request with a body that does not parse.
type malformedFetcher struct{}

func (malformedFetcher) Fetch(context.Context, darktrace.Request, func([]byte) error) (darktrace.Stats, error) {
	return darktrace.Stats{}, &darktrace.Error{Class: darktrace.Retryable, Kind: darktrace.KindMalformed, Endpoint: "/modelbreaches"}
}

// settleHarness is a worker on an in-process bus whose fetcher is f, and the bus's buckets.
func settleHarness(t *testing.T, f Fetcher) (*Worker, jetstream.KeyValue) {
	t.Helper()
	ctx := context.Background()
	b := bustest.New(t)
	kv := func(name string) jetstream.KeyValue {
		t.Helper()
		kv, err := b.KV(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	y := `
outputs: {console_1: {type: console}}
inputs:
  darktrace:
    credentials: {public_token: pub, private_token: priv, instance: "https://dt.example"}
    services:
      modelbreaches: {look_back_in_minutes: 0}
`
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	failed := kv(proto.BucketFailed)
	w, err := New(Endpoints{Work: b, Results: b.JS, Failures: failed, Heartbeats: kv(proto.BucketWorkers),
		Rate: kv(proto.BucketRate), MaxPayload: b.MaxPayload()}, cfg, Options{Fetchers: map[string]Fetcher{"darktrace": f}})
	if err != nil {
		t.Fatal(err)
	}
	return w, failed
}

func item(t *testing.T, v int) (proto.WorkItem, []byte) {
	t.Helper()
	start := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	it := proto.WorkItem{V: v, Input: "darktrace", Service: config.ServiceModelBreaches, Seq: 7,
		Start: start.UnixMilli(), End: start.Add(time.Hour).UnixMilli(), PersistenceVersion: 1, Epoch: 1}
	it.SlotID = proto.SlotID(it.Input, it.Service, it.Start, it.End, 1, "e1")
	data, err := proto.Encode(&it)
	if err != nil {
		t.Fatal(err)
	}
	return it, data
}

// hasFailure reports whether the failed bucket holds a record of it's window.
func hasFailure(t *testing.T, kv jetstream.KeyValue, it proto.WorkItem) bool {
	t.Helper()
	_, err := kv.Get(context.Background(), proto.FailedKey(it.Input, it.Service, it.Start, it.End))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// TestSettleBounds (issue 9, row 4): a work item of a newer schema version is left for a newer
// worker (Nak'ed, never terminated without a record) until its bound, then recorded as failed; a
// slot whose body is malformed on every attempt is retried until its bound, then recorded as
// failed, so the lane goes on in both cases.
func TestSettleBounds(t *testing.T) {
	tests := []struct {
		name      string
		version   int
		delivered uint64
		want      string // how the item is settled
		recorded  bool   // a failure record is written
	}{
		{"newer version, first delivery", proto.SchemaVersion + 1, 1, "nak", false},
		{"newer version, before the bound", proto.SchemaVersion + 1, newerItemDeliveries - 1, "nak", false},
		{"newer version, at the bound", proto.SchemaVersion + 1, newerItemDeliveries, "term", true},
		{"malformed body, first attempt", proto.SchemaVersion, 1, "nak", false},
		{"malformed body, at the bound", proto.SchemaVersion, maxMalformedDeliveries, "term", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, failed := settleHarness(t, malformedFetcher{})
			it, data := item(t, tt.version)
			m := &fakeMsg{data: data, delivered: tt.delivered}
			w.handle(context.Background(), m)
			if got := m.how(); len(got) != 1 || got[0] != tt.want {
				t.Fatalf("settled %v; want [%s]", got, tt.want)
			}
			if got := hasFailure(t, failed, it); got != tt.recorded {
				t.Fatalf("failure record written: %v; want %v", got, tt.recorded)
			}
		})
	}
}
