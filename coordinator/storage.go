package coordinator

import (
	"context"
	"fmt"

	"github.com/dtfleet/dtfleet/proto"
)

// StorageUsage reports how full the JetStream storage is that the KV buckets share (they have no
// byte limit of their own: the account's or the server's storage limit is theirs): used bytes and
// the room they have, 0 when the limit is unknown (then nothing is checked). *bus.Bus implements
// it (bus.Bus.StorageUsage).
type StorageUsage interface {
	StorageUsage(ctx context.Context) (used, room uint64, err error)
}

// storageStream is the label value of dtfleet_coordinator_planning_paused for the JetStream
// storage the buckets share.
const storageStream = "jetstream_storage"

// storageFull reports whether the JetStream storage the buckets share is nearly full (fullShare
// of its room): new slots would add checkpoints, dedupe keys and results, and a bucket write
// refused by a full server stalls every lane, so planning stops first. It reads the usage at most
// once per usageRecheck (like resultsFull), logs once why planning stops and once when it
// resumes, and keeps dtfleet_coordinator_planning_paused{stream="jetstream_storage"} and
// dtfleet_coordinator_storage_used_ratio up to date. A usage that cannot be read does not stop
// planning; it is logged at debug level.
func (c *Coordinator) storageFull(ctx context.Context) bool {
	if c.storage == nil {
		return false
	}
	now := c.clock.Now()
	if !c.storageAt.IsZero() && now.Sub(c.storageAt) < usageRecheck {
		return c.storagePaused
	}
	c.storageAt = now
	used, room, err := c.storage.StorageUsage(ctx)
	if err != nil {
		c.logger.Debug("checking how full the JetStream storage is", "err", err)
		return false
	}
	if room == 0 {
		return false
	}
	ratio := float64(used) / float64(room)
	c.metrics.storage.Set(ratio)
	full := ratio >= fullShare
	if full != c.storagePaused {
		c.storagePaused = full
		if full {
			c.logger.Error(storageFullReason+"; planning stops until it has room (raise the server's max_file_store or the account's storage limit, check that the shippers deliver and that dedupe keys expire)",
				"used_bytes", used, "room_bytes", room, "used", fmt.Sprintf("%.0f%%", ratio*100), "stop_at", fmt.Sprintf("%.0f%%", fullShare*100))
			c.metrics.paused.WithLabelValues(storageStream).Set(1)
			c.recordPaused(ctx, &proto.Paused{V: proto.SchemaVersion, Reason: storageFullReason, Used: used, Room: room, At: now.UnixMilli()})
		} else {
			c.logger.Info("the JetStream storage has room again; planning resumes", "used_bytes", used, "room_bytes", room)
			c.metrics.paused.WithLabelValues(storageStream).Set(0)
			c.recordPaused(ctx, nil)
		}
	}
	return full
}

// storageFullReason is why planning stops on a nearly full storage, in the log and for status.
const storageFullReason = "the JetStream storage the KV buckets share is nearly full"

// recordPaused writes p under proto.PausedStorageKey in the plan bucket for status to show, or
// deletes the record when p is nil. A write that fails (the storage may well be full) is logged
// at debug level: the error log and the gauge already say why planning stopped.
func (c *Coordinator) recordPaused(ctx context.Context, p *proto.Paused) {
	var err error
	if p == nil {
		err = c.plans.kv.Delete(ctx, proto.PausedStorageKey)
	} else {
		var data []byte
		if data, err = proto.Encode(p); err == nil {
			_, err = c.plans.kv.Put(ctx, proto.PausedStorageKey, data)
		}
	}
	if err != nil && ctx.Err() == nil {
		c.logger.Debug("recording the planning pause for status", "err", err)
	}
}
