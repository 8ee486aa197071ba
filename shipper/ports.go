package shipper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/lease"
	"github.com/dtfleet/dtfleet/proto"
)

// Results is the shipper's view of the results stream (proto.StreamResults), where workers
// publish each slot's chunks and done markers.
type Results interface {
	// WatchDone calls fn with the subject and payload of every done marker of the lane
	// (input, service): those stored already, then those published later, in the order the stream
	// stored them. fn is called from one goroutine, one call at a time. stop ends the watch; once it
	// returns, fn is running no more and is not called again.
	WatchDone(ctx context.Context, input, service string, fn func(subject string, data []byte)) (stop func(), err error)
	// Chunk returns the body and the proto.HeaderEncoding value of the last message stored on
	// proto.ChunkSubject(input, service, seq, attempt, index). A chunk that is not there is an error.
	Chunk(ctx context.Context, input, service string, seq uint64, attempt string, index int) (data []byte, encoding string, err error)
	// PurgeSlot removes every message of slot seq (its chunks and its markers, all attempts).
	PurgeSlot(ctx context.Context, input, service string, seq uint64) error
}

// Checkpoints holds the lanes' delivery checkpoints (proto.BucketDelivered). Writes are
// revision-checked, so two shippers can never both move one checkpoint.
type Checkpoints interface {
	// Get returns key's value and revision, or an error wrapping jetstream.ErrKeyNotFound.
	Get(ctx context.Context, key string) (value []byte, rev uint64, err error)
	// Create stores value under key if key holds nothing and returns its revision; otherwise it
	// returns an error wrapping jetstream.ErrKeyExists.
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	// Update stores value under key if key's revision is still rev and returns the new revision;
	// otherwise it returns an error wrapping jetstream.ErrKeyRevisionMismatch.
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
}

// DedupeRecords holds the event keys of delivered batches (proto.BucketDedupe), one record per
// batch under proto.DedupeKey. Records may expire (the bucket's TTL); nothing else removes them.
type DedupeRecords interface {
	// Keys lists the keys that match the subject filter (proto.DedupeFilter). No match is an empty
	// list, not an error.
	Keys(ctx context.Context, filter string) ([]string, error)
	// Get returns key's value and revision, or an error wrapping jetstream.ErrKeyNotFound.
	Get(ctx context.Context, key string) (value []byte, rev uint64, err error)
	// Put stores value under key, whatever it held.
	Put(ctx context.Context, key string, value []byte) error
}

// FailureRecords holds the records of slots that failed for good (proto.BucketFailed).
type FailureRecords interface {
	// Put stores value under key, replacing what it held.
	Put(ctx context.Context, key string, value []byte) error
	// Delete removes key's record; a key that holds none is not an error.
	Delete(ctx context.Context, key string) error
}

// Lease is a lane's leader lease: one shipper at a time delivers a lane.
type Lease interface {
	// Hold waits until it holds the lease, calls onAcquire, then runs fn with a context that ends
	// when the lease is lost or ctx ends. When fn returns it releases the lease. When the lease was
	// lost, or fn returned an error wrapping lease.ErrLost, it waits to hold it again; it returns
	// nil when ctx ends, or fn's other errors. It returns only after fn returned.
	Hold(ctx context.Context, onAcquire func(), fn func(ctx context.Context) error) error
	// Valid reports whether the lease is held and recently enough confirmed that no other holder
	// can have it; the lane checks it before each delivery. Safe for concurrent use.
	Valid() bool
}

// Leases makes leader leases.
type Leases interface {
	// Lease returns the lease named key, held under the name holder, that expires ttl after its
	// last renewal.
	Lease(key, holder string, ttl time.Duration, logger *slog.Logger) Lease
}

// Bus is everything the shipper needs from NATS. JetStreamBus builds it from a JetStream
// connection; tests build it from in-memory fakes.
type Bus struct {
	Results     Results
	Checkpoints Checkpoints
	Dedupe      DedupeRecords
	Failed      FailureRecords
	Leases      Leases
}

// JetStreamBus opens the results stream and the shipper's KV buckets, which must be provisioned
// (bus.Provision), on js. It waits at most kvTimeout for NATS.
func JetStreamBus(ctx context.Context, js jetstream.JetStream) (Bus, error) {
	ctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	kvs := map[string]jetstream.KeyValue{}
	for _, name := range []string{proto.BucketDelivered, proto.BucketDedupe, proto.BucketLeases, proto.BucketFailed} {
		kv, err := js.KeyValue(ctx, name)
		if err != nil {
			return Bus{}, fmt.Errorf("opening KV bucket %s: %w", name, err)
		}
		kvs[name] = kv
	}
	stream, err := js.Stream(ctx, proto.StreamResults)
	if err != nil {
		return Bus{}, fmt.Errorf("opening stream %s: %w", proto.StreamResults, err)
	}
	// The legacy JetStream context reads from the stream's leader, whatever AllowDirect says.
	leader, err := js.Conn().JetStream()
	if err != nil {
		return Bus{}, fmt.Errorf("opening stream %s: %w", proto.StreamResults, err)
	}
	return Bus{
		Results:     StreamResults{Stream: stream, Leader: leader},
		Checkpoints: KV{KeyValue: kvs[proto.BucketDelivered]},
		Dedupe:      KV{KeyValue: kvs[proto.BucketDedupe]},
		Failed:      KV{KeyValue: kvs[proto.BucketFailed]},
		Leases:      KVLeases{KV: kvs[proto.BucketLeases]},
	}, nil
}

// StreamResults implements Results on the JetStream results stream.
type StreamResults struct {
	Stream jetstream.Stream
	// Leader, when set, reads from the stream's leader ($JS.API.STREAM.MSG.GET) a chunk that a
	// direct get did not find (see Chunk).
	Leader nats.JetStreamContext
}

// WatchDone implements Results with an ordered consumer on the lane's marker subjects.
func (s StreamResults) WatchDone(ctx context.Context, input, service string, fn func(string, []byte)) (func(), error) {
	cons, err := s.Stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{proto.DoneFilter(input, service)}})
	if err != nil {
		return nil, fmt.Errorf("reading done markers of %s.%s: %w", input, service, err)
	}
	// The consumer's Stop does not wait for a handler call in progress; the mutex does, and the
	// flag drops any call that starts after stop.
	var (
		mu      sync.Mutex
		stopped bool
	)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			fn(m.Subject(), m.Data())
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading done markers of %s.%s: %w", input, service, err)
	}
	return func() {
		cc.Stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
	}, nil
}

// Chunk implements Results with a direct get of the chunk's subject, confirmed by the stream's
// leader when the direct get does not find it.
func (s StreamResults) Chunk(ctx context.Context, input, service string, seq uint64, attempt string, index int) ([]byte, string, error) {
	subj := proto.ChunkSubject(input, service, seq, attempt, index)
	direct := func(ctx context.Context) ([]byte, string, error) {
		m, err := s.Stream.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			return nil, "", err
		}
		return m.Data, m.Header.Get(proto.HeaderEncoding), nil
	}
	var leader func(ctx context.Context) ([]byte, string, error)
	if s.Leader != nil {
		leader = func(ctx context.Context) ([]byte, string, error) {
			m, err := s.Leader.GetLastMsg(proto.StreamResults, subj, nats.Context(ctx))
			if errors.Is(err, nats.ErrMsgNotFound) {
				return nil, "", jetstream.ErrMsgNotFound
			}
			if err != nil {
				return nil, "", err
			}
			return m.Data, m.Header.Get(proto.HeaderEncoding), nil
		}
	}
	data, enc, err := readConfirmed(ctx, direct, leader)
	if err != nil {
		return nil, "", fmt.Errorf("reading %s: %w", subj, err)
	}
	return data, enc, nil
}

// readConfirmed reads a chunk with direct, and when direct reports it not found, asks leader
// (when set) before saying so. A direct get may be answered by any replica of the stream, and a
// replica that has not caught up with its leader (a restarted server, a slow follower) does not
// know a chunk written a moment ago: JetStream promises no read-after-write on direct gets. The
// lane takes a chunk that is not found for one that expired or was purged, and passes its slot
// over as failed, so a stale "not found" must never reach it: in the chaos suite one replica's
// lag turned every chunk of a lane into a failed slot. Only the leader's "not found" is final;
// any other error from the leader is returned as it is (the lane retries it).
func readConfirmed(ctx context.Context, direct, leader func(context.Context) ([]byte, string, error)) ([]byte, string, error) {
	data, enc, err := direct(ctx)
	if err == nil || leader == nil || !errors.Is(err, jetstream.ErrMsgNotFound) {
		return data, enc, err
	}
	data, enc, lerr := leader(ctx)
	if lerr != nil && !errors.Is(lerr, jetstream.ErrMsgNotFound) {
		return nil, "", fmt.Errorf("a replica did not find it, and asking the stream's leader failed: %w", lerr)
	}
	return data, enc, lerr
}

// PurgeSlot implements Results.
func (s StreamResults) PurgeSlot(ctx context.Context, input, service string, seq uint64) error {
	filter := proto.SlotFilter(input, service, seq)
	if err := s.Stream.Purge(ctx, jetstream.WithPurgeSubject(filter)); err != nil {
		return fmt.Errorf("purging %s: %w", filter, err)
	}
	return nil
}

// KV implements Checkpoints, DedupeRecords and FailureRecords on a JetStream KV bucket.
type KV struct{ KeyValue jetstream.KeyValue }

// Get implements Checkpoints and DedupeRecords.
func (k KV) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := k.KeyValue.Get(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

// Create implements Checkpoints.
func (k KV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	return k.KeyValue.Create(ctx, key, value)
}

// Update implements Checkpoints.
func (k KV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return k.KeyValue.Update(ctx, key, value, rev)
}

// Put implements DedupeRecords.
func (k KV) Put(ctx context.Context, key string, value []byte) error {
	_, err := k.KeyValue.Put(ctx, key, value)
	return err
}

// Keys implements DedupeRecords.
func (k KV) Keys(ctx context.Context, filter string) ([]string, error) {
	lister, err := k.KeyValue.ListKeysFiltered(ctx, filter)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	return keys, nil
}

// Delete implements FailureRecords.
func (k KV) Delete(ctx context.Context, key string) error {
	return k.KeyValue.Delete(ctx, key)
}

// KVLeases implements Leases with internal/lease on the leases bucket, whose TTL must equal the
// leases' ttl.
type KVLeases struct{ KV jetstream.KeyValue }

// Lease implements Leases.
func (l KVLeases) Lease(key, holder string, ttl time.Duration, logger *slog.Logger) Lease {
	return kvLease{lease.New(l.KV, key, holder, ttl, logger)}
}

type kvLease struct{ *lease.Lease }

func (l kvLease) Hold(ctx context.Context, onAcquire func(), fn func(ctx context.Context) error) error {
	return lease.Hold(ctx, l.Lease, onAcquire, fn)
}
