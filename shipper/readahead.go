package shipper

import (
	"context"
	"sync"

	"github.com/dtfleet/dtfleet/proto"
)

// chunkKey names one stored chunk exactly as the lane reads it: the chunk index of one attempt of
// one slot, and the epoch of the marker that named the attempt. A prefetched chunk serves the lane
// only under the very key the lane asks for.
type chunkKey struct {
	input, service string
	seq            uint64
	attempt        string
	epoch          uint64
	index          int
}

func keyOf(d proto.Done, i int) chunkKey {
	return chunkKey{input: d.Input, service: d.Service, seq: d.Seq, attempt: d.Attempt, epoch: d.Epoch, index: i}
}

// prefetched is one chunk read ahead of the lane, as Results.Chunk returned it (err included:
// the prefetcher never acts on an error, the lane reads again).
type prefetched struct {
	key      chunkKey
	data     []byte
	encoding string
	err      error
}

// readAhead reads the chunks the lane will need next while the lane sends and records a batch.
// The lane reads chunks in a fixed order: the chunks of a slot's chosen attempt in index order,
// then those of the next slot whose marker is known (a failed slot has none), and so on. The
// goroutine (run) follows that order from the position after the chunk the lane last asked for,
// using the markers the lane knows when it gets there, and keeps at most limit bytes of raw chunk
// data (plus the one read in flight).
//
// Reading is side-effect free, so the read-ahead is only a cache the lane may take from: take
// hands over a chunk only when it is exactly the one the lane asks for, and otherwise discards
// everything read ahead and starts again after the chunk asked for. Errors are handed over to
// nobody: the lane reads that chunk itself and handles what it gets.
//
// Only the lane's goroutine calls take; run is the one other goroutine. The raw data handed over
// belongs to the lane from then on (Results.Chunk returns a fresh slice each call).
type readAhead struct {
	limit  int
	marker func(seq uint64) (proto.Done, bool)
	read   func(ctx context.Context, d proto.Done, i int) ([]byte, string, error)
	wake   chan struct{} // capacity 1: the position moved, bytes were freed or a marker came

	mu sync.Mutex
	// gen counts the repositionings: a read that started under another gen is dropped.
	gen uint64
	// pos, idx is the next chunk to read (idx may be pos.Chunks: the slot after pos is next);
	// ok is false until the lane first asks for a chunk, and after a read failed.
	pos      proto.Done
	idx      int
	ok       bool
	queue    []prefetched
	bytes    int
	inflight chunkKey
	reading  bool
	landed   chan struct{} // closed and replaced when a read lands
	// hits and misses count the lane's takes, for tests and debugging.
	hits, misses int
}

func newReadAhead(limit int, marker func(uint64) (proto.Done, bool), read func(context.Context, proto.Done, int) ([]byte, string, error)) *readAhead {
	return &readAhead{limit: limit, marker: marker, read: read, wake: make(chan struct{}, 1), landed: make(chan struct{})}
}

// poke wakes the goroutine to look again (a marker came, bytes were freed). It never blocks; a
// nil read-ahead ignores it.
func (a *readAhead) poke() {
	if a == nil {
		return
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// take returns chunk i of d's attempt when it was read ahead without error, and reports whether
// it was. When that chunk is being read at the moment, take waits for that read (or ctx). In
// every other case it discards what was read ahead, moves the read-ahead to the chunk after i and
// reports false: the caller then reads chunk i itself.
func (a *readAhead) take(ctx context.Context, d proto.Done, i int) ([]byte, string, bool) {
	k := keyOf(d, i)
	a.mu.Lock()
	for len(a.queue) == 0 && a.reading && a.inflight == k {
		landed := a.landed
		a.mu.Unlock()
		select {
		case <-ctx.Done():
			a.mu.Lock()
			a.resetLocked(d, i+1)
			a.mu.Unlock()
			return nil, "", false
		case <-landed:
		}
		a.mu.Lock()
	}
	if len(a.queue) > 0 && a.queue[0].key == k && a.queue[0].err == nil {
		p := a.queue[0]
		a.queue[0] = prefetched{}
		a.queue = a.queue[1:]
		a.bytes -= len(p.data)
		a.hits++
		a.mu.Unlock()
		a.poke()
		return p.data, p.encoding, true
	}
	a.resetLocked(d, i+1)
	a.mu.Unlock()
	a.poke()
	return nil, "", false
}

// resetLocked discards the read-ahead and moves it to chunk i of d (the slot after d when i is
// d's last). a.mu must be held.
func (a *readAhead) resetLocked(d proto.Done, i int) {
	a.misses++
	a.gen++
	clear(a.queue)
	a.queue, a.bytes = a.queue[:0], 0
	a.pos, a.idx, a.ok = d, i, true
	a.reading = false
}

// stats returns the takes served from the read-ahead and those that were not (zeros for a nil
// read-ahead).
func (a *readAhead) stats() (hits, misses int) {
	if a == nil {
		return 0, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hits, a.misses
}

// nextLocked returns the next chunk to read, moving the position over slots whose chunks are all
// read and over failed slots; false when there is none yet (no marker, no position, or the bytes
// bound reached). a.mu must be held.
func (a *readAhead) nextLocked() (proto.Done, int, bool) {
	if !a.ok || a.bytes >= a.limit {
		return proto.Done{}, 0, false
	}
	for a.pos.Failed || a.idx >= a.pos.Chunks {
		m, ok := a.marker(a.pos.Seq + 1)
		if !ok {
			return proto.Done{}, 0, false
		}
		a.pos, a.idx = m, 0
	}
	return a.pos, a.idx, true
}

// run reads ahead until ctx ends; it returns when it stopped reading.
func (a *readAhead) run(ctx context.Context) {
	for {
		a.mu.Lock()
		d, i, ok := a.nextLocked()
		if !ok {
			a.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-a.wake:
			}
			continue
		}
		gen := a.gen
		a.inflight, a.reading = keyOf(d, i), true
		a.mu.Unlock()

		data, encoding, err := a.read(ctx, d, i)

		a.mu.Lock()
		if gen == a.gen {
			a.queue = append(a.queue, prefetched{key: keyOf(d, i), data: data, encoding: encoding, err: err})
			a.bytes += len(data)
			a.reading = false
			if err != nil {
				// The lane reads this chunk itself and decides; reading past it would only guess.
				a.ok = false
			} else {
				a.idx = i + 1
			}
		}
		close(a.landed)
		a.landed = make(chan struct{})
		a.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
	}
}
