package shipper

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/proto"
)

// dedupeSet holds the event keys a lane delivered recently, so checking an event costs a map
// lookup, not a network round trip. Keys are persisted per delivered batch (one KV record whose
// key carries the batch's window), and the set holds exactly the records of the current epoch
// whose window ends at or after from. Moving the lane forward evicts older records; a slot older
// than from (a replay) loads the records it overlaps from KV first, so a replay without --force
// adds nothing however old its range.
type dedupeSet struct {
	kv      DedupeRecords
	input   string
	service string

	epoch  uint64
	from   int64 // records with maxEnd >= from are in keys; MaxInt64 when nothing is loaded
	keys   map[string]int64
	loaded bool
}

func newDedupeSet(kv DedupeRecords, input, service string) *dedupeSet {
	return &dedupeSet{kv: kv, input: input, service: service, keys: map[string]int64{}}
}

// prepare makes the set cover a slot of epoch whose window starts at start, given the lane keeps
// keys for retain milliseconds before a slot's start.
func (d *dedupeSet) prepare(ctx context.Context, epoch uint64, start, retain int64) error {
	want := start - retain
	if !d.loaded || epoch != d.epoch {
		d.epoch, d.keys, d.loaded = epoch, map[string]int64{}, true
		d.from = 1<<63 - 1
	}
	switch {
	case want < d.from:
		if err := d.load(ctx, want, d.from); err != nil {
			return err
		}
		d.from = want
	case want-d.from > retain/4+1:
		// Evict in steps, not per slot: a pass over the map is O(keys).
		for k, end := range d.keys {
			if end < want {
				delete(d.keys, k)
			}
		}
		d.from = want
	}
	return nil
}

// load adds the records whose window ends in [lo, hi). Each KV call waits at most kvTimeout.
func (d *dedupeSet) load(ctx context.Context, lo, hi int64) error {
	lctx, cancel := context.WithTimeout(ctx, kvTimeout)
	all, err := d.kv.Keys(lctx, proto.DedupeFilter(d.input, d.service, d.epoch))
	cancel()
	if err != nil {
		return fmt.Errorf("listing dedupe records of %s.%s: %w", d.input, d.service, err)
	}
	var want []string
	for _, k := range all {
		_, maxEnd, ok := parseDedupeKey(k)
		if ok && maxEnd >= lo && maxEnd < hi {
			want = append(want, k)
		}
	}
	for _, k := range want {
		gctx, cancel := context.WithTimeout(ctx, kvTimeout)
		value, _, err := d.kv.Get(gctx, k)
		cancel()
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return fmt.Errorf("reading dedupe record %s: %w", k, err)
		}
		var rec proto.DedupeRecord
		if err := proto.Decode(value, &rec); err != nil {
			return fmt.Errorf("reading dedupe record %s: %w", k, err)
		}
		_, maxEnd, _ := parseDedupeKey(k)
		for _, key := range rec.Keys {
			if maxEnd > d.keys[key] {
				d.keys[key] = maxEnd
			}
		}
	}
	return nil
}

func (d *dedupeSet) seen(key string) bool {
	_, ok := d.keys[key]
	return ok
}

// add records delivered keys in memory (after they were persisted).
func (d *dedupeSet) add(keys []string, maxEnd int64) {
	for _, k := range keys {
		if maxEnd > d.keys[k] {
			d.keys[k] = maxEnd
		}
	}
}

// persist stores a delivered batch's keys. It is called after the outputs confirmed the batch and
// before the delivery checkpoint moves; ctx must carry the write's deadline. Storing the same
// record again is harmless, so a failed persist is retried alone.
func (d *dedupeSet) persist(ctx context.Context, epoch uint64, minStart, maxEnd int64, firstSeq uint64, firstChunk int, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	data, err := proto.Encode(&proto.DedupeRecord{V: proto.SchemaVersion, Keys: keys})
	if err != nil {
		return err
	}
	key := proto.DedupeKey(d.input, d.service, epoch, minStart, maxEnd, firstSeq, firstChunk)
	if err := d.kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("storing dedupe record %s: %w", key, err)
	}
	return nil
}

// parseDedupeKey reads the window bounds from a record's key (see proto.DedupeKey).
func parseDedupeKey(k string) (minStart, maxEnd int64, ok bool) {
	parts := strings.Split(k, ".")
	if len(parts) < 7 {
		return 0, 0, false
	}
	n := len(parts)
	a, err1 := strconv.ParseInt(parts[n-4], 10, 64)
	b, err2 := strconv.ParseInt(parts[n-3], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return a, b, true
}
