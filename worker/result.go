package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/semaphore"

	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/events"
)

// sorter puts a slot's events in event-time order. It copies each event's data into blocks it
// reuses (from blocks), so that the event's memory may be reused once add returns and a slot
// costs no allocation per event. It holds the slot's events until the end of
// the slot, so a slot is sorted exactly, as long as it fits in memory: the first floor bytes of
// each slot are its own; beyond them it draws on a budget shared by every slot the worker
// processes at once. When the shared budget is spent, the slot is flushed sorted: exact when the
// appliance returns it in time order (as /modelbreaches does), sorted in runs otherwise, which
// onDisorder reports once. This keeps a worker's memory bounded whatever its concurrency and
// whatever the response sizes.
type sorter struct {
	floor int
	pool  *sortPool
	// flush takes the events in order; with blocks set it must not keep an event's Data after it
	// returns (the chunk writer copies it), since the block it lies in is reused.
	flush      func(events.Event) error
	onDisorder func()

	blocks *blockPool
	held   [][]byte // blocks holding buf's data
	cur    []byte   // the block being filled (its last in held)

	buf         []events.Event
	bytes       int
	drawn       int // bytes of buf drawn on the pool
	n           int
	lastFlushed int64
	flushed     bool
	warned      bool
}

// sortPool is the budget of event bytes shared by a worker's sorters.
type sortPool struct {
	max  int64
	used atomic.Int64
}

// blockSize is the size of the blocks a sorter copies events into; an event of more than a
// quarter of it gets memory of its own.
const blockSize = 256 << 10

// blockPool holds the blocks of a worker's sorters. A block returns to it only when nothing refers
// to its data any more: after the events in it were flushed (the chunk writer encodes them as
// they come) or dropped.
type blockPool struct{ p sync.Pool }

func (b *blockPool) get() []byte {
	if p, ok := b.p.Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, blockSize)
}

func (b *blockPool) put(block []byte) { b.p.Put(&block) }

// own returns a copy of d in the sorter's blocks.
func (s *sorter) own(d []byte) []byte {
	if s.blocks == nil || len(d) > blockSize/4 {
		return append(d[:0:0], d...)
	}
	if cap(s.cur)-len(s.cur) < len(d) {
		s.cur = s.blocks.get()
		s.held = append(s.held, s.cur)
	}
	off := len(s.cur)
	s.cur = append(s.cur, d...)
	s.held[len(s.held)-1] = s.cur
	return s.cur[off:len(s.cur):len(s.cur)]
}

// dropBlocks returns the sorter's blocks to the pool; nothing may refer to their data any more.
func (s *sorter) dropBlocks() {
	for i, b := range s.held {
		s.blocks.put(b)
		s.held[i] = nil
	}
	s.held, s.cur = s.held[:0], nil
}

// add takes ev, whose Data it copies: the caller may reuse that memory once add returns.
func (s *sorter) add(ev events.Event) error {
	ev.Data = s.own(ev.Data)
	s.n++
	if s.flushed && ev.Time < s.lastFlushed && !s.warned {
		s.warned = true
		if s.onDisorder != nil {
			s.onDisorder()
		}
	}
	s.buf = append(s.buf, ev)
	size := len(ev.Data) + len(ev.Key)
	s.bytes += size
	if s.bytes > s.floor {
		s.drawn += size
		if s.pool.used.Add(int64(size)) > s.pool.max {
			return s.spill()
		}
	}
	return nil
}

func (s *sorter) spill() error {
	events.SortByTime(s.buf)
	// Read before the loop clears the events (reading it after made it always 0, and the
	// out-of-order warning never fired).
	if len(s.buf) > 0 {
		s.lastFlushed = max(s.lastFlushed, s.buf[len(s.buf)-1].Time)
		s.flushed = true
	}
	for i := range s.buf {
		if err := s.flush(s.buf[i]); err != nil {
			return err
		}
		s.buf[i] = events.Event{}
	}
	s.buf, s.bytes = s.buf[:0], 0
	// flush copied every event (the chunk writer encodes events as they are added).
	s.dropBlocks()
	s.release()
	return nil
}

// release returns the bytes drawn on the pool. It is safe to call more than once.
func (s *sorter) release() {
	if s.drawn > 0 {
		s.pool.used.Add(-int64(s.drawn))
		s.drawn = 0
	}
}

func (s *sorter) finish() error { return s.spill() }

// chunkWriter publishes a slot's events as chunks that fit the server's max payload, under the
// attempt's own subjects (so two attempts never mix). Publishes are asynchronous; the bytes of
// unacknowledged chunks are bounded per worker by budget, shared by every slot in flight
// (bounded memory, and pushback when the results stream is full or slow to sync). Chunk buffers
// are reused once acknowledged. An acknowledgement that does not come within ackTimeout on clock
// (the stream's leader died mid-publish) fails the slot's attempt with errAckTimeout, so the item
// is Nak'ed and fetched again instead of pinned.
type chunkWriter struct {
	ctx     context.Context
	clock   clockwork.Clock
	js      ResultPublisher
	it      proto.WorkItem
	attempt string
	max     int
	budget  *semaphore.Weighted
	bufs    *sync.Pool

	// enc holds the chunk being filled (open says whether one is): events are encoded as they
	// are added, so the caller's memory for them is free again as soon as add returns.
	enc     proto.ChunkEncoder
	open    bool
	index   int
	futures []pending
}

// pending is a published chunk awaiting its acknowledgement.
type pending struct {
	f    jetstream.PubAckFuture
	data []byte
}

// eventOverhead approximates msgpack's framing of one event.
const eventOverhead = 32

// ackTimeout bounds the wait for the results stream's acknowledgement of one chunk.
const ackTimeout = 30 * time.Second

// errAckTimeout means the results stream did not acknowledge a chunk within ackTimeout.
var errAckTimeout = errors.New("no acknowledgement from the results stream within the publish timeout")

func newChunkWriter(ctx context.Context, clock clockwork.Clock, js ResultPublisher, it proto.WorkItem, attempt string, maxBytes int, budget *semaphore.Weighted, bufs *sync.Pool) *chunkWriter {
	return &chunkWriter{ctx: ctx, clock: clock, js: js, it: it, attempt: attempt, max: maxBytes, budget: budget, bufs: bufs}
}

func (c *chunkWriter) add(ev events.Event) error {
	part := c.max - len(ev.Key) - 4*eventOverhead
	if len(ev.Data) <= part {
		return c.addPart(proto.Event{K: ev.Key, T: ev.Time, D: ev.Data})
	}
	// An event larger than a chunk travels in parts, one chunk each, reassembled by the shipper.
	for d := ev.Data; len(d) > 0; {
		n := min(part, len(d))
		if err := c.addPart(proto.Event{K: ev.Key, T: ev.Time, D: d[:n], More: n < len(d)}); err != nil {
			return err
		}
		d = d[n:]
	}
	return nil
}

func (c *chunkWriter) addPart(pe proto.Event) error {
	size := len(pe.D) + len(pe.K) + eventOverhead
	if c.open && c.enc.Events() > 0 && c.enc.Len()+size > c.max {
		if err := c.flush(); err != nil {
			return err
		}
	}
	if !c.open {
		// Every pooled buffer is big enough for either use (an encoding, or its compression),
		// so none is dropped for being the wrong size: the worker's chunk buffers are reused
		// instead of allocated (and cleared) again, one or two per chunk.
		c.enc.Reset(c.buffer(c.max+64<<10), &proto.Chunk{V: proto.SchemaVersion, SlotID: c.it.SlotID, Seq: c.it.Seq, Index: c.index})
		c.open = true
	}
	c.enc.Add(&pe)
	return nil
}

func (c *chunkWriter) flush() error {
	raw := c.enc.Bytes()
	c.open = false
	data := proto.CompressChunk(c.buffer(proto.CompressedBound(len(raw))), raw)
	c.bufs.Put(&raw)
	if err := c.acquire(budgetOf(data)); err != nil {
		return err
	}
	subj := proto.ChunkSubject(c.it.Input, c.it.Service, c.it.Seq, c.attempt, c.index)
	msg := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{proto.HeaderEncoding: []string{proto.EncodingS2}}}
	f, err := c.js.PublishMsgAsync(msg, jetstream.WithMsgID(subj))
	if err != nil {
		c.budget.Release(budgetOf(data))
		return fmt.Errorf("publishing chunk %d of slot %d: %w", c.index, c.it.Seq, err)
	}
	c.futures = append(c.futures, pending{f: f, data: data})
	c.index++
	return nil
}

// buffer returns an empty buffer of at least n bytes' capacity from the pool, or a new one of the
// capacity every chunk's encoding and compression fit in.
func (c *chunkWriter) buffer(n int) []byte {
	if p, ok := c.bufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:0]
	}
	return make([]byte, 0, max(n, proto.CompressedBound(c.max+64<<10)))
}

// acquire reserves n bytes of the publish budget. While the budget is spent it settles this
// slot's own oldest publishes first (so slots never wait on one another while holding budget),
// and only blocks when it holds none.
func (c *chunkWriter) acquire(n int64) error {
	for !c.budget.TryAcquire(n) {
		if len(c.futures) == 0 {
			if err := c.budget.Acquire(c.ctx, n); err != nil {
				return err
			}
			return nil
		}
		if err := c.wait(len(c.futures) - 1); err != nil {
			return err
		}
	}
	return nil
}

// wait waits until at most keep publishes are unacknowledged, for up to ackTimeout per chunk.
func (c *chunkWriter) wait(keep int) error {
	if len(c.futures) <= keep {
		return nil
	}
	timer := c.clock.NewTimer(ackTimeout)
	defer timer.Stop()
	for len(c.futures) > keep {
		p := c.futures[0]
		select {
		case <-p.f.Ok():
		case err := <-p.f.Err():
			return fmt.Errorf("publishing a chunk of slot %d: %w", c.it.Seq, err)
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-timer.Chan():
			return fmt.Errorf("publishing chunk %d of slot %d: %w", c.index-len(c.futures), c.it.Seq, errAckTimeout)
		}
		timer.Reset(ackTimeout)
		c.budget.Release(budgetOf(p.data))
		c.bufs.Put(&p.data)
		c.futures = c.futures[1:]
	}
	return nil
}

// abort releases the budget of publishes that were never confirmed (their buffers are dropped,
// since the connection may still hold them). It is safe after close.
func (c *chunkWriter) abort() {
	for _, p := range c.futures {
		c.budget.Release(budgetOf(p.data))
	}
	c.futures = nil
}

// close publishes the last chunk and waits for every acknowledgement. It returns the number of
// chunks.
func (c *chunkWriter) close() (int, error) {
	if c.open && c.enc.Events() > 0 {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	if err := c.wait(0); err != nil {
		return 0, err
	}
	return c.index, nil
}

// budgetOf is what an unacknowledged chunk counts against the publish budget: the capacity of
// its buffer, not its length, since a compressed chunk keeps its whole (pooled) buffer alive.
func budgetOf(data []byte) int64 { return int64(min(cap(data), maxPublishBudget)) }

// maxPublishBudget is the bytes of unacknowledged chunks a worker allows, over all its slots.
const maxPublishBudget = 16 << 20
