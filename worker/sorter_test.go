package worker

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/events"
)

// ackedAt is a publish future acknowledged at once.
type ackedAt struct{ msg *nats.Msg }

func (a ackedAt) Ok() <-chan *jetstream.PubAck {
	ch := make(chan *jetstream.PubAck, 1)
	ch <- &jetstream.PubAck{}
	return ch
}
func (a ackedAt) Err() <-chan error { return nil }
func (a ackedAt) Msg() *nats.Msg    { return a.msg }

// recordingResults keeps every chunk published, acknowledging each at once.
type recordingResults struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (r *recordingResults) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cp := *m
	cp.Data = slices.Clone(m.Data) // the writer reuses its buffers once acknowledged
	r.msgs = append(r.msgs, &cp)
	return ackedAt{msg: m}, nil
}

func (r *recordingResults) Publish(context.Context, string, []byte, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return &jetstream.PubAck{}, nil
}

func (r *recordingResults) published() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// events decodes the published chunks in subject order (chunk index), checks the indices run
// 0, 1, 2, … and reassembles the events sent in parts, as the shipper does.
func (r *recordingResults) events(t *testing.T, it proto.WorkItem, attempt string) []events.Event {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	byIndex := map[int]*nats.Msg{}
	for _, m := range r.msgs {
		for i := 0; ; i++ {
			if m.Subject == proto.ChunkSubject(it.Input, it.Service, it.Seq, attempt, i) {
				if byIndex[i] != nil {
					t.Fatalf("chunk %d published twice", i)
				}
				byIndex[i] = m
				break
			}
			if i > len(r.msgs) {
				t.Fatalf("subject %s is no chunk of the slot", m.Subject)
			}
		}
	}
	var out []events.Event
	var part []byte
	for i := range len(byIndex) {
		m := byIndex[i]
		if m == nil {
			t.Fatalf("chunk %d of %d missing", i, len(byIndex))
		}
		var ch proto.Chunk
		if err := proto.ReadChunk(m.Data, m.Header.Get(proto.HeaderEncoding), &ch); err != nil {
			t.Fatal(err)
		}
		if ch.Index != i {
			t.Fatalf("chunk published as %d says it is %d", i, ch.Index)
		}
		for _, pe := range ch.Events {
			part = append(part, pe.D...)
			if pe.More {
				continue
			}
			out = append(out, events.Event{Key: pe.K, Time: pe.T, Data: part})
			part = nil
		}
	}
	return out
}

func sortTestEvents(times []int64, big map[int]int) []events.Event {
	var evs []events.Event
	for i, ts := range times {
		size := 300
		if n, ok := big[i]; ok {
			size = n
		}
		d := append([]byte(`{"n":"`+strconv.Itoa(i)+`","pad":"`), bytes.Repeat([]byte{'x'}, size)...)
		evs = append(evs, events.Event{Key: "mb:" + strconv.Itoa(i), Time: ts, Data: append(d, `"}`...)})
	}
	return evs
}

// TestSorterOrdersAndHolds: a slot's events come out exactly in time order, each once, in chunks
// numbered from 0, whether they arrive in order or not (with an event bigger than a chunk among
// them, sent in parts), and nothing is published before the slot is done while it fits its
// budget. The caller's memory is reused after every add, as the worker's scanner reuses its
// buffer, so the sorter must have copied it.
func TestSorterOrdersAndHolds(t *testing.T) {
	t.Parallel()
	inOrder := make([]int64, 60)
	for i := range inOrder {
		inOrder[i] = int64(1000 + i)
	}
	lateDisorder := slices.Clone(inOrder)
	lateDisorder[55] = 5 // after several chunks were held
	firstDisorder := slices.Clone(inOrder)
	firstDisorder[1] = 1
	tests := []struct {
		name  string
		times []int64
		big   map[int]int // event index -> data size
	}{
		{"in order", inOrder, nil},
		{"in order with an event in parts", inOrder, map[int]int{20: 10 << 10}},
		{"one late event after held chunks", lateDisorder, map[int]int{20: 10 << 10}},
		{"disorder at the second event", firstDisorder, nil},
		{"reversed", func() []int64 { r := slices.Clone(inOrder); slices.Reverse(r); return r }(), map[int]int{3: 9 << 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := &recordingResults{}
			it := proto.WorkItem{V: proto.SchemaVersion, SlotID: "s", Input: "darktrace", Service: "modelbreaches", Seq: 7}
			out := newChunkWriter(context.Background(), clockwork.NewFakeClock(), res, it, "a1", 4<<10, semaphore.NewWeighted(maxPublishBudget), &sync.Pool{})
			disorder := 0
			s := &sorter{floor: sortFloor, pool: &sortPool{max: 1 << 30}, blocks: &blockPool{}, flush: out.add, onDisorder: func() { disorder++ }}
			evs := sortTestEvents(tc.times, tc.big)
			scratch := make([]byte, 0, 16<<10)
			for _, ev := range evs {
				lent := ev
				lent.Data = append(scratch[:0], ev.Data...)
				if err := s.add(lent); err != nil {
					t.Fatal(err)
				}
				for i := range lent.Data {
					lent.Data[i] = '!'
				}
			}
			if n := res.published(); n != 0 {
				t.Fatalf("%d chunks published before the slot was done, within its budget", n)
			}
			if err := s.finish(); err != nil {
				t.Fatal(err)
			}
			chunks, err := out.close()
			if err != nil {
				t.Fatal(err)
			}
			got := res.events(t, it, "a1")
			if chunks != res.published() || chunks < 2 {
				t.Fatalf("close says %d chunks, %d published; want the same, at least 2", chunks, res.published())
			}
			want := slices.Clone(evs)
			slices.SortStableFunc(want, func(a, b events.Event) int { return int(a.Time - b.Time) })
			if len(got) != len(want) {
				t.Fatalf("%d events published, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i].Key != want[i].Key || got[i].Time != want[i].Time || !bytes.Equal(got[i].Data, want[i].Data) {
					t.Fatalf("event %d: got %s at %d (%d bytes), want %s at %d (%d bytes)", i, got[i].Key, got[i].Time, len(got[i].Data), want[i].Key, want[i].Time, len(want[i].Data))
				}
			}
			if disorder != 0 || s.n != len(evs) {
				t.Errorf("onDisorder called %d times, %d events counted; want 0 and %d", disorder, s.n, len(evs))
			}
		})
	}
}

// TestSorterSpillsInRuns: a slot beyond its budget is published as it goes, in runs each sorted,
// and a run older than one already published is reported once.
func TestSorterSpillsInRuns(t *testing.T) {
	t.Parallel()
	res := &recordingResults{}
	it := proto.WorkItem{V: proto.SchemaVersion, SlotID: "s", Input: "darktrace", Service: "modelbreaches", Seq: 8}
	out := newChunkWriter(context.Background(), clockwork.NewFakeClock(), res, it, "a1", 4<<10, semaphore.NewWeighted(maxPublishBudget), &sync.Pool{})
	disorder := 0
	pool := &sortPool{max: 0}
	s := &sorter{floor: sortFloor, pool: pool, blocks: &blockPool{}, flush: out.add, onDisorder: func() { disorder++ }}
	var times []int64
	for i := range 4000 { // about 1.3 MB: several spills past the floor
		times = append(times, int64(10000+i))
	}
	times[3000] = 1 // older than what is published by then
	for _, ev := range sortTestEvents(times, nil) {
		if err := s.add(ev); err != nil {
			t.Fatal(err)
		}
	}
	if res.published() == 0 {
		t.Fatal("nothing published while the slot outgrew its budget")
	}
	if err := s.finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := out.close(); err != nil {
		t.Fatal(err)
	}
	got := res.events(t, it, "a1")
	if len(got) != len(times) || disorder != 1 {
		t.Fatalf("%d events, onDisorder %d times; want %d and once", len(got), disorder, len(times))
	}
	seen := map[string]bool{}
	for _, ev := range got {
		if seen[ev.Key] {
			t.Fatalf("%s published twice", ev.Key)
		}
		seen[ev.Key] = true
	}
	if pool.used.Load() != 0 {
		t.Errorf("the pool still counts %d bytes", pool.used.Load())
	}
	// A spill per event (the budget is spent) still fills chunks: 4,000 events of about 330 bytes
	// in chunks of 4 KiB.
	if n := res.published(); n > 2*4000*330/(4<<10)+2 {
		t.Errorf("%d chunks for 4,000 small events", n)
	}
}
