package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/lease"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// changes is a broadcast of "something changed": waiters re-check their condition on each one.
type changes struct {
	mu sync.Mutex
	ch chan struct{}
}

func (c *changes) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

func (c *changes) signal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
}

// memResults is an in-memory results stream with the contract of Results.
type memResults struct {
	changed *changes

	mu      sync.Mutex
	markers []*storedMarker // in publish order
	chunks  map[string][]byte
	handed  int // markers handed to a watcher's fn, over all watchers
	purged  []uint64
	grew    chan struct{} // closed and replaced when a marker is published
}

type storedMarker struct {
	subject string
	data    []byte
	purged  bool
}

func newMemResults(c *changes) *memResults {
	return &memResults{changed: c, chunks: map[string][]byte{}, grew: make(chan struct{})}
}

func (m *memResults) publishChunk(subject string, data []byte) {
	m.mu.Lock()
	m.chunks[subject] = data
	m.mu.Unlock()
}

func (m *memResults) publishMarker(subject string, data []byte) {
	m.mu.Lock()
	m.markers = append(m.markers, &storedMarker{subject: subject, data: data})
	close(m.grew)
	m.grew = make(chan struct{})
	m.mu.Unlock()
}

func (m *memResults) handedCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.handed
}

func (m *memResults) purgedSeqs() []uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]uint64(nil), m.purged...)
}

func (m *memResults) WatchDone(_ context.Context, input, service string, fn func(string, []byte)) (func(), error) {
	prefix := "dtf.result." + input + "." + service + "."
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		next := 0
		for {
			m.mu.Lock()
			var batch []*storedMarker
			for ; next < len(m.markers); next++ {
				sm := m.markers[next]
				if !sm.purged && strings.HasPrefix(sm.subject, prefix) && strings.HasSuffix(sm.subject, ".done") {
					batch = append(batch, sm)
				}
			}
			grew := m.grew
			m.mu.Unlock()
			for _, sm := range batch {
				if wctx.Err() != nil {
					return
				}
				fn(sm.subject, sm.data)
				m.mu.Lock()
				m.handed++
				m.mu.Unlock()
				m.changed.signal()
			}
			select {
			case <-wctx.Done():
				return
			case <-grew:
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

func (m *memResults) Chunk(_ context.Context, input, service string, seq uint64, attempt string, index int) ([]byte, string, error) {
	subj := proto.ChunkSubject(input, service, seq, attempt, index)
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.chunks[subj]
	if !ok {
		return nil, "", fmt.Errorf("reading %s: %w", subj, jetstream.ErrMsgNotFound)
	}
	return data, "", nil
}

func (m *memResults) PurgeSlot(_ context.Context, input, service string, seq uint64) error {
	prefix := strings.TrimSuffix(proto.SlotFilter(input, service, seq), ">")
	m.mu.Lock()
	for subj := range m.chunks {
		if strings.HasPrefix(subj, prefix) {
			delete(m.chunks, subj)
		}
	}
	for _, sm := range m.markers {
		if strings.HasPrefix(sm.subject, prefix) {
			sm.purged = true
		}
	}
	m.purged = append(m.purged, seq)
	m.mu.Unlock()
	m.changed.signal()
	return nil
}

// memKV is an in-memory KV bucket with the contracts of Checkpoints, DedupeRecords and
// FailureRecords.
type memKV struct {
	changed *changes

	mu   sync.Mutex
	rev  uint64
	data map[string]memEntry
}

type memEntry struct {
	value []byte
	rev   uint64
}

func newMemKV(c *changes) *memKV { return &memKV{changed: c, data: map[string]memEntry{}} }

func (k *memKV) Get(_ context.Context, key string) ([]byte, uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.data[key]
	if !ok {
		return nil, 0, fmt.Errorf("get %s: %w", key, jetstream.ErrKeyNotFound)
	}
	return e.value, e.rev, nil
}

func (k *memKV) set(key string, value []byte) uint64 {
	k.rev++
	k.data[key] = memEntry{value: append([]byte(nil), value...), rev: k.rev}
	return k.rev
}

func (k *memKV) Create(_ context.Context, key string, value []byte) (uint64, error) {
	k.mu.Lock()
	defer k.changed.signal()
	defer k.mu.Unlock()
	if _, ok := k.data[key]; ok {
		return 0, fmt.Errorf("create %s: %w", key, jetstream.ErrKeyExists)
	}
	return k.set(key, value), nil
}

func (k *memKV) Update(_ context.Context, key string, value []byte, rev uint64) (uint64, error) {
	k.mu.Lock()
	defer k.changed.signal()
	defer k.mu.Unlock()
	if e, ok := k.data[key]; !ok || e.rev != rev {
		return 0, fmt.Errorf("update %s: %w", key, jetstream.ErrKeyRevisionMismatch)
	}
	return k.set(key, value), nil
}

func (k *memKV) Put(_ context.Context, key string, value []byte) error {
	k.mu.Lock()
	defer k.changed.signal()
	defer k.mu.Unlock()
	k.set(key, value)
	return nil
}

func (k *memKV) Delete(_ context.Context, key string) error {
	k.mu.Lock()
	defer k.changed.signal()
	defer k.mu.Unlock()
	delete(k.data, key)
	return nil
}

func (k *memKV) Keys(_ context.Context, filter string) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var keys []string
	for key := range k.data {
		if subjectMatches(filter, key) {
			keys = append(keys, key)
		}
	}
	return keys, nil
}

func (k *memKV) keys() []string {
	got, _ := k.Keys(context.Background(), ">")
	return got
}

// subjectMatches reports whether subject matches a NATS filter ("*" one token, ">" the rest).
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

// errKVTimeout is how a faultyKV fails: as a NATS call whose deadline passed.
var errKVTimeout = fmt.Errorf("nats: %w", context.DeadlineExceeded)

// faultyKV is a memKV whose first calls of some kinds fail with errKVTimeout; it counts the calls
// of each kind. Writes are Create and Update (the checkpoint's), puts are Put (the dedupe
// record's).
type faultyKV struct {
	*memKV

	mu                             sync.Mutex
	failGets, failPuts, failWrites int // calls of each kind that fail, from the first
	gets, puts, writes             int // calls of each kind made
}

// fail counts a call of one kind and reports whether it must fail.
func (f *faultyKV) fail(calls *int, fails int) bool {
	f.mu.Lock()
	*calls++
	failed := *calls <= fails
	f.mu.Unlock()
	if failed {
		f.changed.signal()
	}
	return failed
}

func (f *faultyKV) counts() (gets, puts, writes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets, f.puts, f.writes
}

func (f *faultyKV) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	if f.fail(&f.gets, f.failGets) {
		return nil, 0, fmt.Errorf("get %s: %w", key, errKVTimeout)
	}
	return f.memKV.Get(ctx, key)
}

func (f *faultyKV) Put(ctx context.Context, key string, value []byte) error {
	if f.fail(&f.puts, f.failPuts) {
		return fmt.Errorf("put %s: %w", key, errKVTimeout)
	}
	return f.memKV.Put(ctx, key, value)
}

func (f *faultyKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if f.fail(&f.writes, f.failWrites) {
		return 0, fmt.Errorf("create %s: %w", key, errKVTimeout)
	}
	return f.memKV.Create(ctx, key, value)
}

func (f *faultyKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if f.fail(&f.writes, f.failWrites) {
		return 0, fmt.Errorf("update %s: %w", key, errKVTimeout)
	}
	return f.memKV.Update(ctx, key, value, rev)
}

// memLeases hands out leases over one in-memory table: a lease is free or held by one holder,
// and a holder's Hold waits until it is free.
type memLeases struct {
	changed *changes

	mu      sync.Mutex
	holders map[string]string
	freed   chan struct{} // closed and replaced when a lease is released
}

func newMemLeases(c *changes) *memLeases {
	return &memLeases{changed: c, holders: map[string]string{}, freed: make(chan struct{})}
}

func (m *memLeases) holder(key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holders[key]
}

func (m *memLeases) Lease(key, holder string, _ time.Duration, _ *slog.Logger) Lease {
	return &memLease{table: m, key: key, holder: holder}
}

type memLease struct {
	table       *memLeases
	key, holder string
}

func (l *memLease) Hold(ctx context.Context, onAcquire func(), fn func(context.Context) error) error {
	t := l.table
	for {
		if !l.acquire(ctx) {
			return nil
		}
		t.changed.signal()
		if onAcquire != nil {
			onAcquire()
		}
		err := fn(ctx)
		t.mu.Lock()
		delete(t.holders, l.key)
		close(t.freed)
		t.freed = make(chan struct{})
		t.mu.Unlock()
		t.changed.signal()
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, lease.ErrLost) {
			return err
		}
		// fn found the lease lost: stand by and compete again, as lease.Hold does.
	}
}

// acquire waits until the lease is free and takes it; it reports false when ctx ended first.
func (l *memLease) acquire(ctx context.Context) bool {
	t := l.table
	for {
		t.mu.Lock()
		if t.holders[l.key] == "" {
			t.holders[l.key] = l.holder
			t.mu.Unlock()
			return true
		}
		freed := t.freed
		t.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-freed:
		}
	}
}

func (l *memLease) Valid() bool { return l.table.holder(l.key) == l.holder }

// memOutput records the batches it accepted. Its first fails Sends fail; each Send's time on
// clock is recorded.
type memOutput struct {
	name    string
	changed *changes
	clock   clockwork.Clock

	mu       sync.Mutex
	fails    int
	attempts []time.Time
	events   []string // messages of accepted batches, in order
	batches  int
}

func (o *memOutput) Name() string { return o.name }
func (o *memOutput) Close() error { return nil }
func (o *memOutput) Send(_ context.Context, b *devo.Batch) error {
	defer o.changed.signal()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.attempts = append(o.attempts, o.clock.Now())
	if len(o.attempts) <= o.fails {
		return errors.New("output unavailable")
	}
	for _, e := range b.Events {
		o.events = append(o.events, string(e.Msg))
	}
	o.batches++
	return nil
}

func (o *memOutput) batchCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.batches
}

func (o *memOutput) got() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.events...)
}

func (o *memOutput) sendTimes() []time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]time.Time(nil), o.attempts...)
}
