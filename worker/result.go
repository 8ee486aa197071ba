package worker

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/events"
)

// sorter puts a slot's events in event-time order. It holds the slot's events until the end of
// the slot, so a slot is sorted exactly, as long as it fits in memory: the first floor bytes of
// each slot are its own; beyond them it draws on a budget shared by every slot the worker
// processes at once. When the shared budget is spent, the slot is flushed sorted: exact when the
// appliance returns it in time order (as /modelbreaches does), sorted in runs otherwise, which
// onDisorder reports once. This keeps a worker's memory bounded whatever its concurrency and
// whatever the response sizes.
type sorter struct {
	floor      int
	pool       *sortPool
	flush      func(events.Event) error
	onDisorder func()

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

func (s *sorter) add(ev events.Event) error {
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
	for i := range s.buf {
		if err := s.flush(s.buf[i]); err != nil {
			return err
		}
		s.buf[i] = events.Event{}
	}
	if len(s.buf) > 0 {
		s.lastFlushed = max(s.lastFlushed, s.buf[len(s.buf)-1].Time)
		s.flushed = true
	}
	s.buf, s.bytes = s.buf[:0], 0
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
// attempt's own subjects (so two attempts never mix), with at most maxOutstanding unacknowledged
// publishes (bounded memory, and pushback when the results stream is full).
type chunkWriter struct {
	ctx     context.Context
	js      jetstream.JetStream
	it      proto.WorkItem
	attempt string
	max     int

	cur      []proto.Event
	curBytes int
	index    int
	futures  []jetstream.PubAckFuture
}

const maxOutstanding = 16

// eventOverhead approximates msgpack's framing of one event.
const eventOverhead = 32

func newChunkWriter(ctx context.Context, js jetstream.JetStream, it proto.WorkItem, attempt string, maxBytes int) *chunkWriter {
	return &chunkWriter{ctx: ctx, js: js, it: it, attempt: attempt, max: maxBytes}
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
	if len(c.cur) > 0 && c.curBytes+size > c.max {
		if err := c.flush(); err != nil {
			return err
		}
	}
	c.cur = append(c.cur, pe)
	c.curBytes += size
	return nil
}

func (c *chunkWriter) flush() error {
	ch := proto.Chunk{V: proto.SchemaVersion, SlotID: c.it.SlotID, Seq: c.it.Seq, Index: c.index, Events: c.cur}
	data, err := proto.Encode(&ch)
	if err != nil {
		return fmt.Errorf("encoding chunk %d of slot %d: %w", c.index, c.it.Seq, err)
	}
	subj := proto.ChunkSubject(c.it.Input, c.it.Service, c.it.Seq, c.attempt, c.index)
	f, err := c.js.PublishMsgAsync(&nats.Msg{Subject: subj, Data: data}, jetstream.WithMsgID(subj))
	if err != nil {
		return fmt.Errorf("publishing chunk %d of slot %d: %w", c.index, c.it.Seq, err)
	}
	c.futures = append(c.futures, f)
	c.index++
	clear(c.cur)
	c.cur, c.curBytes = c.cur[:0], 0
	if len(c.futures) >= maxOutstanding {
		return c.wait(maxOutstanding / 2)
	}
	return nil
}

// wait waits until at most keep publishes are unacknowledged.
func (c *chunkWriter) wait(keep int) error {
	for len(c.futures) > keep {
		f := c.futures[0]
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publishing a chunk of slot %d: %w", c.it.Seq, err)
		case <-c.ctx.Done():
			return c.ctx.Err()
		}
		c.futures = c.futures[1:]
	}
	return nil
}

// close publishes the last chunk and waits for every acknowledgement. It returns the number of
// chunks.
func (c *chunkWriter) close() (int, error) {
	if len(c.cur) > 0 {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	if err := c.wait(0); err != nil {
		return 0, err
	}
	return c.index, nil
}
