package darktracetest

import (
	"strconv"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// VisibleAt returns, for every event of service with event time in [start, end), the instant it
// becomes visible to requests (a breach's creation time), keyed as Key keys it. With Options.Now
// left to the wall clock and End in the future, the fake is a live appliance: events appear over
// time, some of them (late breaches) well after their event time. Benchmarks measure freshness
// against these instants.
func (h *Handler) VisibleAt(service string, start, end time.Time) map[string]time.Time {
	recs := h.allRecs(service, start, end)
	out := make(map[string]time.Time, len(recs))
	for _, r := range recs {
		k := strconv.FormatInt(r.id, 10)
		if service == config.ServiceIncidentEvents {
			k = uuidString(r.uuid)
		}
		out[k] = time.UnixMilli(r.created)
	}
	return out
}
