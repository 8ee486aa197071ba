package darktracetest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// WindowField says which timestamp a /aianalyst/incidentevents or /antigena time window filters
// on. The reference leaves it UNVERIFIED for both endpoints, so the fake offers both readings;
// the zero value, WindowOnEventTime, is the harsher one for a collector.
type WindowField int

const (
	// WindowOnEventTime filters on the event time: createdAt for AI Analyst events, start for
	// Antigena actions. An event that becomes visible (or changes) after its window was fetched
	// is returned only by fetching that window again.
	WindowOnEventTime WindowField = iota
	// WindowOnChangeTime filters on when the event became what it is now: the instant an AI
	// Analyst event became visible, an Antigena action's current updated time. A window fetched
	// after its end then holds every event that appeared or changed in it.
	WindowOnChangeTime
)

// String names the reading as the simulate flags spell it.
func (f WindowField) String() string {
	if f == WindowOnChangeTime {
		return "change"
	}
	return "event"
}

// ParseWindowField parses "event" or "change" (String's names).
func ParseWindowField(s string) (WindowField, error) {
	switch s {
	case "event", "":
		return WindowOnEventTime, nil
	case "change":
		return WindowOnChangeTime, nil
	}
	return 0, fmt.Errorf("window field %q: expected event or change", s)
}

// Untidiness is the real world's mess the fake reproduces on request. The zero value keeps the
// tidy behaviour the fleet tests rely on; RealisticUntidiness turns all of it on. Every draw
// comes from a random stream of its own, so turning a knob on leaves every other generated field
// (ids, times, scores) as it was.
type Untidiness struct {
	// LateBreachShare is the share in [0, 1] of model breaches created long after their time:
	// their creationTime is time plus a delay drawn uniformly from [5 min, MaxBreachDelay]. A
	// breach is invisible until the appliance clock reaches its creationTime, in the backfill
	// range and live alike. (Without it, 8% of breaches are created 5–60 minutes late.)
	LateBreachShare float64
	// MaxBreachDelay bounds those delays; 0 means 3 hours.
	MaxBreachDelay time.Duration
	// IncidentDelay makes each AI Analyst event visible only some time after its createdAt: a
	// delay drawn uniformly from (0, IncidentDelay]. 0 means visible at createdAt.
	IncidentDelay time.Duration
	// IncidentWindow is what /aianalyst/incidentevents' window filters on.
	IncidentWindow WindowField
	// ActionLifecycle makes Antigena actions change over time: each is created (active) at its
	// start, 30% are extended once (a later expires) at least 10 minutes after start, 20% are
	// cleared at least 5 minutes after their last change, and the rest expire. Each change sets
	// "updated" (a string of epoch milliseconds, as the schema types it) and adds a history
	// entry. Without it an action never changes and carries no "updated".
	ActionLifecycle bool
	// ActionWindow is what /antigena's window filters on.
	ActionWindow WindowField
	// ClockOffset is how far the appliance's clock is ahead of Options.Now (negative: behind).
	// The Date header, the DTAPI-Date check, visibility and snapshots all use the appliance's
	// clock.
	ClockOffset time.Duration
}

// RealisticUntidiness returns the untidiness of a live appliance: 10% of breaches created up to 3
// hours late, AI Analyst events visible up to 5 minutes after createdAt, Antigena actions that
// are extended, cleared and expire, and an appliance clock 90 seconds ahead. The windows filter
// on event time, the harsher reading.
func RealisticUntidiness() Untidiness {
	return Untidiness{
		LateBreachShare: 0.10,
		MaxBreachDelay:  3 * time.Hour,
		IncidentDelay:   5 * time.Minute,
		ActionLifecycle: true,
		ClockOffset:     90 * time.Second,
	}
}

// withDefaults fills MaxBreachDelay.
func (u Untidiness) withDefaults() Untidiness {
	if u.MaxBreachDelay <= 0 {
		u.MaxBreachDelay = 3 * time.Hour
	}
	return u
}

// Validate reports knobs out of range.
func (u Untidiness) Validate() error {
	if u.LateBreachShare < 0 || u.LateBreachShare > 1 {
		return fmt.Errorf("late breach share %v is not in [0, 1]", u.LateBreachShare)
	}
	if u.IncidentDelay < 0 || u.MaxBreachDelay < 0 {
		return fmt.Errorf("delays must not be negative (incident delay %v, max breach delay %v)", u.IncidentDelay, u.MaxBreachDelay)
	}
	return nil
}

// Lifecycle knobs (ActionLifecycle).
const (
	extendPercent = 30
	clearPercent  = 20
	minToExtend   = 10 * int64(time.Minute/time.Millisecond)
	minToClear    = 5 * int64(time.Minute/time.Millisecond)
	// maxActionLife bounds start..final expiry: 24 h plus an extension of at most 4 h.
	maxActionLife = 28 * hourMs
)

// Action states, as Due and TruthKey name them.
const (
	StateCreated  = "created"
	StateExtended = "extended"
	StateCleared  = "cleared"
	StateExpired  = "expired"
)

// untidy applies the Untidiness knobs to one generated hour, before any shuffling, from a random
// stream of its own.
func (h *Handler) untidy(service string, hour int64, recs []rec) {
	u := h.opts.Untidy
	if u.LateBreachShare <= 0 && u.IncidentDelay <= 0 && !u.ActionLifecycle {
		return // tidy: no draws, no allocation on the generation path
	}
	rng := rand.New(rand.NewPCG(uint64(h.opts.Seed)^0x756e74696479, mix(serviceIndex[service], uint64(hour), 0x7531)))
	for i := range recs {
		r := &recs[i]
		switch service {
		case config.ServiceModelBreaches:
			if u.LateBreachShare > 0 && rng.Float64() < u.LateBreachShare {
				lo := int64(5 * time.Minute / time.Millisecond)
				hi := max(u.MaxBreachDelay.Milliseconds(), lo)
				r.created = r.t + lo + rng.Int64N(hi-lo+1)
			}
		case config.ServiceIncidentEvents:
			if d := u.IncidentDelay.Milliseconds(); d > 0 {
				r.created = r.t + 1 + rng.Int64N(d)
			}
		case config.ServiceAntigena:
			if !u.ActionLifecycle {
				continue
			}
			r.cleared = false
			last := r.t
			if life := r.expires - r.t; rng.IntN(100) < extendPercent && life > 2*minToExtend {
				r.extendAt = r.t + minToExtend + rng.Int64N(life-2*minToExtend)
				r.newExpires = r.expires + []int64{1, 2, 4}[rng.IntN(3)]*hourMs
				last = r.extendAt
			}
			final := r.finalExpires()
			if room := final - last - 2*minToClear; rng.IntN(100) < clearPercent && room > 0 {
				r.clearAt = last + minToClear + rng.Int64N(room)
			}
		}
	}
}

// finalExpires is an action's expiry after any extension.
func (r *rec) finalExpires() int64 {
	if r.extendAt != 0 {
		return r.newExpires
	}
	return r.expires
}

// transition is one state an Antigena action takes, from at on.
type transition struct {
	state   string
	at      int64 // epoch ms; the "updated" of the state
	expires int64
}

// transitions returns an action's states in order (ActionLifecycle), up to and including the one
// current at now. Without the lifecycle it returns the one static state.
func (h *Handler) transitions(r *rec, now int64) []transition {
	if !h.opts.Untidy.ActionLifecycle {
		st := StateCreated
		if r.cleared {
			st = StateCleared
		}
		return []transition{{state: st, at: r.t, expires: r.expires}}
	}
	ts := []transition{{StateCreated, r.t, r.expires}}
	if r.extendAt != 0 {
		ts = append(ts, transition{StateExtended, r.extendAt, r.newExpires})
	}
	if r.clearAt != 0 {
		ts = append(ts, transition{StateCleared, r.clearAt, r.finalExpires()})
	} else {
		ts = append(ts, transition{StateExpired, r.finalExpires(), r.finalExpires()})
	}
	n := 0
	for _, t := range ts {
		if t.at <= now {
			n++
		}
	}
	return ts[:max(n, 1)]
}

// current returns an action's state at now.
func (h *Handler) current(r *rec, now int64) transition {
	ts := h.transitions(r, now)
	return ts[len(ts)-1]
}

// lag is how long after its event time an event of service may become visible or change, so
// that a window on visibility or change time can find its events' generation hours.
func (h *Handler) lag(service string, q *query) int64 {
	u := h.opts.Untidy
	switch service {
	case config.ServiceModelBreaches:
		if q.creationTime {
			return max(hourMs, u.MaxBreachDelay.Milliseconds())
		}
	case config.ServiceIncidentEvents:
		if u.IncidentWindow == WindowOnChangeTime {
			return u.IncidentDelay.Milliseconds()
		}
	case config.ServiceAntigena:
		if u.ActionWindow == WindowOnChangeTime {
			return maxActionLife
		}
	}
	return 0
}

// windowKey is the time a request's window is compared with for r at now.
func (h *Handler) windowKey(service string, q *query, r *rec, now int64) int64 {
	u := h.opts.Untidy
	switch service {
	case config.ServiceModelBreaches:
		if q.creationTime {
			return r.created
		}
	case config.ServiceIncidentEvents:
		if u.IncidentWindow == WindowOnChangeTime {
			return r.created
		}
	case config.ServiceAntigena:
		if u.ActionWindow == WindowOnChangeTime {
			return h.current(r, now).at
		}
	}
	return r.t
}

// TruthEvent is one thing a complete collector delivers: an event, or for Antigena one state of
// an action.
type TruthEvent struct {
	// Key identifies it: the pbid, the AI Analyst id, or "<codeid>:<state>" for an Antigena
	// action state (see TruthKey).
	Key string `json:"key"`
	// Time is the event time: time, createdAt, or the action's start.
	Time time.Time `json:"time"`
	// VisibleAt is when the appliance first returns it: a breach's creationTime, the instant an
	// AI Analyst event became visible, or the action state's updated time.
	VisibleAt time.Time `json:"visible_at"`
	// State is the Antigena action state (created, extended, cleared, expired); empty otherwise.
	State string `json:"state,omitempty"`
	// Updated is the Antigena action state's "updated" time (its start for the created state).
	Updated time.Time `json:"updated,omitzero"`
}

// Due returns what a complete collector must have delivered, by appliance time at, of the events
// of service with event time in [start, end) ∩ [Start, End): every breach once (key pbid)
// including the late ones already created, every AI Analyst event once (key id) already visible,
// and every state of every Antigena action (key codeid:state) reached by at, with its updated
// time. Acknowledged, pinned and cleared events count (dtfleet asks for them). It is sorted by
// VisibleAt, then Key. Snapshots (status, summarystatistics) have no ground truth: nil.
func (h *Handler) Due(service string, start, end, at time.Time) []TruthEvent {
	atMs := at.UnixMilli()
	var out []TruthEvent
	for _, r := range h.allRecs(service, start, end) {
		switch service {
		case config.ServiceAntigena:
			if r.t > atMs {
				continue
			}
			for _, tr := range h.transitions(&r, atMs) {
				out = append(out, TruthEvent{
					Key: strconv.FormatInt(r.id, 10) + ":" + tr.state, Time: time.UnixMilli(r.t).UTC(),
					VisibleAt: time.UnixMilli(tr.at).UTC(), State: tr.state, Updated: time.UnixMilli(tr.at).UTC(),
				})
			}
		case config.ServiceModelBreaches, config.ServiceIncidentEvents:
			if r.created > atMs {
				continue
			}
			k := strconv.FormatInt(r.id, 10)
			if service == config.ServiceIncidentEvents {
				k = uuidString(r.uuid)
			}
			out = append(out, TruthEvent{Key: k, Time: time.UnixMilli(r.t).UTC(), VisibleAt: time.UnixMilli(r.created).UTC()})
		}
	}
	slices.SortFunc(out, func(a, b TruthEvent) int {
		return cmp.Or(a.VisibleAt.Compare(b.VisibleAt), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// TruthKey returns the key Due gives the event raw (as the appliance returned it): Key's key for
// breaches and AI Analyst events; for an Antigena action "<codeid>:<state>", the state read from
// its fields: cleared when "cleared" is true, else expired when "updated" is at or after
// "expires", else extended when "updated" is after "start", else created. Unparsable events give
// "".
func TruthKey(service string, raw []byte) string {
	k := Key(service, raw)
	if service != config.ServiceAntigena || k == "" {
		return k
	}
	var a struct {
		Cleared bool        `json:"cleared"`
		Start   json.Number `json:"start"`
		Expires json.Number `json:"expires"`
		Updated json.Number `json:"updated"`
	}
	if json.Unmarshal(raw, &a) != nil {
		return ""
	}
	start, _ := a.Start.Int64()
	expires, _ := a.Expires.Int64()
	updated, err := a.Updated.Int64()
	switch {
	case a.Cleared:
		return k + ":" + StateCleared
	case err != nil || a.Updated == "":
		return k + ":" + StateCreated
	case updated >= expires:
		return k + ":" + StateExpired
	case updated > start:
		return k + ":" + StateExtended
	}
	return k + ":" + StateCreated
}

// untidySummary describes the knobs in effect, for the control API's stats.
func (h *Handler) untidySummary() map[string]any {
	u := h.opts.Untidy
	return map[string]any{
		"late_breach_share": u.LateBreachShare, "max_breach_delay": u.MaxBreachDelay.String(),
		"incident_delay": u.IncidentDelay.String(), "incident_window": u.IncidentWindow.String(),
		"action_lifecycle": u.ActionLifecycle, "action_window": u.ActionWindow.String(),
		"clock_offset": u.ClockOffset.String(),
	}
}
