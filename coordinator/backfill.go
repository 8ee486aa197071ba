package coordinator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// Backfill logging (issue 12): when a lane starts far behind, say once how many slots it has to
// fetch, the pace the fleet's pacing expects, and which knob would make it faster.
const (
	// backfillSlots is how many slots behind a lane must be for its catch-up to be a backfill.
	backfillSlots = 24
	// backfillLogWait is how long the line waits for the workers to measure the appliance
	// (their pacing records in the rate bucket); after it, the line says the pace is not known.
	backfillLogWait = 30 * time.Second
	// paceFresh is how old a worker's pacing record may be and still count.
	paceFresh = 30 * time.Second
)

// logBackfill logs the backfill line of ln once per lane and coordinator: when its unplanned
// slots number backfillSlots or more the first time it is called for the lane, as soon as a worker has measured the appliance's latency,
// or backfillLogWait after the lane started. It reads the workers' pacing records (proto.Pace)
// from the rate bucket at most once a second per lane; a lane not behind is never logged. The
// pace is the ceiling (requests_per_second) or the fleet's adaptive limit per latency floor,
// whichever is less, and the knob is the one that binds.
func (c *Coordinator) logBackfill(ctx context.Context, ln config.Lane, st *proto.Plan, now time.Time) {
	key := proto.LaneKey(ln.Input, ln.Service)
	if c.backfill == nil {
		c.backfill = map[string]*backfillLog{}
	}
	bl := c.backfill[key]
	if bl != nil && bl.done || ln.Svc.Snapshot || ln.Svc.Window <= 0 {
		return // logged already, or a snapshot lane (one slot per period, never a backfill)
	}
	host := c.clock.Now()
	if bl == nil {
		// Counted when the lane is first seen: planning moves the cursor on while the line waits.
		slots := int(now.Add(-c.lag).Sub(time.UnixMilli(st.Cursor)) / ln.Svc.Window)
		if slots < backfillSlots {
			c.backfill[key] = &backfillLog{done: true}
			return
		}
		bl = &backfillLog{first: host, slots: slots, from: st.Cursor}
		c.backfill[key] = bl
	} else if host.Sub(bl.checked) < time.Second {
		return
	}
	bl.checked = host
	first, slots := bl.first, bl.slots
	var workers, limit, most int
	var floorMS int64
	var ceiling float64
	if lister, err := c.rate.ListKeys(ctx); err == nil {
		prefix := proto.PaceKeyPrefix + ln.Input + "."
		for k := range lister.Keys() {
			if !strings.HasPrefix(k, prefix) {
				continue
			}
			e, err := c.rate.Get(ctx, k)
			var p proto.Pace
			if err != nil || proto.Decode(e.Value(), &p) != nil || host.Sub(time.UnixMilli(p.At)) > paceFresh {
				continue
			}
			workers++
			limit += p.Limit
			most += p.Max
			ceiling = p.Ceiling
			if p.FloorMS > 0 && (floorMS == 0 || p.FloorMS < floorMS) {
				floorMS = p.FloorMS
			}
		}
	}
	if floorMS == 0 && host.Sub(first) < backfillLogWait {
		return // the workers have not measured the appliance yet: wait for a better estimate
	}
	bl.done = true
	log := c.logger.With("input", ln.Input, "service", ln.Service, "slots", slots, "from", proto.FormatMS(bl.from),
		"workers", workers, "limit", limit, "max", most, "latency_floor_ms", floorMS, "requests_per_second", ceiling)
	if floorMS == 0 || workers == 0 {
		log.Info(fmt.Sprintf("Backfill of %d slots starting; no worker has measured the appliance yet, so its pace is not known (status shows it once they have)", slots))
		return
	}
	floor := time.Duration(floorMS) * time.Millisecond
	pace := float64(limit) / floor.Seconds()
	atMax := float64(most) / floor.Seconds()
	knob := "workers.concurrency (or more workers)"
	switch {
	case ceiling > 0 && atMax >= ceiling:
		// The pacing grows to the ceiling unless the appliance's latency rises first; at the
		// first measurement the limit is still in its slow start, so its own pace says little.
		pace = ceiling
		knob = "requests_per_second (the ceiling binds once the pacing has grown)"
	case limit < most:
		knob = "workers.concurrency (or more workers), once the pacing reaches it; the appliance's latency holds it now"
	}
	eta := time.Duration(float64(slots) / pace * float64(time.Second)).Round(time.Second)
	log.Info(fmt.Sprintf("Backfill of %d slots starting at about %.3g requests/s (about %s); %s would make it faster", slots, pace, eta, knob))
}

// backfillLog is logBackfill's state of one lane.
type backfillLog struct {
	first   time.Time // when the lane was first seen behind
	checked time.Time // when the pacing records were last read
	done    bool      // logged, or not a backfill
	slots   int       // slots behind when first seen
	from    int64     // the plan's cursor then, epoch ms
}
