package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/dtfleet/dtfleet/proto"
)

// recordTooLarge records one event of slot it that is over workers.max_event_size_in_mb, and so
// dropped while the rest of the slot is delivered, as a failed event: a failure record of its
// own in the failed bucket (proto.FailedEventKey), which status and `failed list` show and the
// slot's delivery does not clear. key is the event's dedupe key when it could be read ("" when
// not: the event is then named by its index in the slot's response). Fetching the slot again
// rewrites the same record.
func (w *Worker) recordTooLarge(ctx context.Context, it proto.WorkItem, key string, index int, size int64) error {
	name, id := key, ""
	if key != "" {
		sum := sha256.Sum256([]byte(key))
		id = hex.EncodeToString(sum[:8])
	} else {
		name, id = "index "+strconv.Itoa(index), "i"+strconv.Itoa(index)
	}
	rk := proto.FailedEventKey(it.Input, it.Service, it.Start, it.End, id)
	rec := proto.Failure{V: proto.SchemaVersion, SlotID: it.SlotID, Input: it.Input, Service: it.Service, Seq: it.Seq,
		Start: it.Start, End: it.End, Worker: w.opts.ID, At: w.clock.Now().UnixMilli(), Event: name, Key: rk,
		Error: fmt.Sprintf("event %s of %d bytes is larger than workers.max_event_size_in_mb (%d bytes): dropped, the rest of the slot was delivered; "+
			"this event is not in Devo (fetch it from the appliance to inspect it; clear this record with dtfleet failed clear)", name, size, w.maxEvent)}
	data, err := proto.Encode(&rec)
	if err != nil {
		return err
	}
	if _, err := w.ep.Failures.Put(ctx, rk, data); err != nil {
		return fmt.Errorf("recording the event too large to deliver (%s): %w", name, err)
	}
	return nil
}
