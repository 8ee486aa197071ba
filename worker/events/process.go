package events

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// Event is one processed event, ready to cross the bus.
type Event struct {
	// Key is the event's stable dedupe key (see Processor.Process).
	Key string
	// Time is the event time in epoch milliseconds (UTC).
	Time int64
	// Data is the event as compact single-line JSON (flattened, obfuscated); the Event owns it.
	Data []byte
}

// Options configures a Processor.
type Options struct {
	// Service is a config.Service* name.
	Service string
	// Flatten splits /status snapshots into one event per node (status only).
	Flatten bool
	// Obfuscation lists fields to hash or mask; nil means none. Paths are dot-separated member
	// names, each optionally followed by "[]" (every element of an array, or every member value
	// of an object, such as /status's "probes[].ipAddress"); they address the source event, before
	// flattening. Hashing replaces a value with the string hex(HMAC-SHA256(salt, value as a
	// string)), masking with "***"; see obfuscator.apply for the details.
	Obfuscation *config.Obfuscation
	// Logger receives a warning for each event delivered under a fallback key; nil discards.
	Logger *slog.Logger
}

// ErrNoKey is wrapped by the errors for an event whose key field is missing or unusable.
// Process does not fail with it: it delivers such an event under FallbackKey and counts it.
var ErrNoKey = errors.New("event has no usable key")

// ErrUnknownService is wrapped by NewProcessor's error for a service it does not know.
var ErrUnknownService = errors.New("unknown service")

// Stats counts what a Processor has done since it was made.
type Stats struct {
	// Events is the number of events emitted.
	Events uint64
	// FallbackKeys counts events emitted under FallbackKey because their key field was
	// missing or unusable.
	FallbackKeys uint64
	// FallbackTimes counts events whose time field was missing or unusable, so that they carry
	// the poll time instead.
	FallbackTimes uint64
}

// Processor turns the raw events of one service into Events. It is safe for concurrent use.
type Processor struct {
	service string
	flatten bool
	ob      *obfuscator
	log     *slog.Logger

	events        atomic.Uint64
	fallbackKeys  atomic.Uint64
	fallbackTimes atomic.Uint64
}

// NewProcessor returns a Processor for opts.Service. It fails, wrapping ErrUnknownService or
// ErrInvalidObfuscation, for a service that is not one of config.Services or for an obfuscation
// path that does not parse, or hash paths without a salt.
func NewProcessor(opts Options) (*Processor, error) {
	if !slices.Contains(config.Services, opts.Service) {
		return nil, fmt.Errorf("making event processor: %w %q", ErrUnknownService, opts.Service)
	}
	ob, err := newObfuscator(opts.Obfuscation)
	if err != nil {
		return nil, fmt.Errorf("making event processor for %s: %w", opts.Service, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Processor{
		service: opts.Service,
		flatten: opts.Flatten && opts.Service == config.ServiceStatus,
		ob:      ob,
		log:     log.With("component", "events", "service", opts.Service),
	}, nil
}

// Stats returns the processor's counters.
func (p *Processor) Stats() Stats {
	return Stats{
		Events:        p.events.Load(),
		FallbackKeys:  p.fallbackKeys.Load(),
		FallbackTimes: p.fallbackTimes.Load(),
	}
}

// Process turns one raw event from Split into zero or more Events (status flattening yields
// several) and calls emit for each, stopping at and returning emit's first error. pollTime is the
// slot's poll time (used for snapshots' keys and times). raw must be one JSON value; Process
// validates and compacts it, and fails with an error wrapping ErrMalformed otherwise. Process
// does not keep raw. It is safe for concurrent use.
//
// Keys and times, read from the original event (before obfuscation, so keys do not depend on
// the salt), by a scan of its top-level members:
//
//   - modelbreaches: key "mb:<pbid>", time "time".
//   - aianalyst_incidentevents: key "ai:<id>", time "createdAt".
//   - antigena: key "ag:<codeid>:<state>", where state is the first 16 hex digits of the
//     SHA-256 of the action's mutable fields "updated", "expires" (both normalised to decimal
//     milliseconds when they parse as times, so a number and a numeric string agree), "active",
//     "cleared" and "blocked" (their JSON tokens; an absent field and null differ). A changed
//     action is thus delivered again under a new key, an unchanged one is not. Time: "start", or
//     "updated" when it is present and later (a state change is dated when it happened).
//   - summarystatistics: key "ss:<pollTimeMs>", time pollTime.
//   - status: key "st:<pollTimeMs>:<node>", time pollTime; node is "master" for an unflattened
//     snapshot, else as described by flattening: "instance:<k>", "probe:<p>" or
//     "instance:<k>:probe:<p>".
//
// Ids (pbid, codeid) are JSON integers or strings holding one, written in canonical decimal; an
// AI Analyst id is a string of printable ASCII without spaces (at most 256 bytes) or an integer.
// Times are epoch milliseconds as a JSON number or a string holding one; a missing or unusable
// time is replaced by pollTime and counted in Stats.FallbackTimes. An event whose key field is
// missing or unusable is not an error: it is emitted under FallbackKey(service, compact original
// event), counted in Stats.FallbackKeys and logged as a warning (without its contents), so it is
// neither dropped nor duplicated when fetched again unchanged.
func (p *Processor) Process(raw []byte, pollTime time.Time, emit func(Event) error) error {
	data, err := compactCopy(raw)
	if err != nil {
		return fmt.Errorf("processing %s event: %w", p.service, err)
	}
	pollMs := pollTime.UnixMilli()
	switch p.service {
	case config.ServiceStatus:
		return p.processStatus(data, pollMs, emit)
	case config.ServiceSummary:
		data, err = p.obfuscate(data)
		if err != nil {
			return err
		}
		return p.emit(emit, Event{Key: "ss:" + strconv.FormatInt(pollMs, 10), Time: pollMs, Data: data})
	}
	key, t, err := p.route(data, pollMs)
	if err != nil {
		if !errors.Is(err, ErrNoKey) {
			return fmt.Errorf("processing %s event: %w", p.service, err)
		}
		key = FallbackKey(p.service, data)
		p.fallbackKeys.Add(1)
		p.log.Warn("event delivered under a fallback key", "key", key, "err", err)
	}
	data, err = p.obfuscate(data)
	if err != nil {
		return err
	}
	return p.emit(emit, Event{Key: key, Time: t, Data: data})
}

func (p *Processor) emit(emit func(Event) error, ev Event) error {
	p.events.Add(1)
	return emit(ev)
}

// Names of the fields route reads, per service; the first is the key field.
var (
	breachFields   = []string{"pbid", "time"}
	incidentFields = []string{"id", "createdAt"}
	actionFields   = []string{"codeid", "start", "updated", "expires", "active", "cleared", "blocked"}
)

// route reads a windowed service's event key and time from data. Its error wraps ErrNoKey when
// the key is missing or unusable; the time is still set then.
func (p *Processor) route(data []byte, pollMs int64) (string, int64, error) {
	var names []string
	switch p.service {
	case config.ServiceModelBreaches:
		names = breachFields
	case config.ServiceIncidentEvents:
		names = incidentFields
	default:
		names = actionFields
	}
	var buf [8][]byte
	vals := buf[:len(names)]
	if err := lookup(data, names, vals); err != nil {
		p.fallbackTimes.Add(1)
		return "", pollMs, fmt.Errorf("%w: %w", ErrNoKey, err)
	}
	var (
		key string
		ok  bool
		t   int64
	)
	switch p.service {
	case config.ServiceModelBreaches:
		key, ok = parseID(vals[0])
		key = "mb:" + key
		t, _ = p.eventTime(vals[1], pollMs)
	case config.ServiceIncidentEvents:
		key, ok = parseTextID(vals[0])
		key = "ai:" + key
		t, _ = p.eventTime(vals[1], pollMs)
	default:
		key, ok = parseID(vals[0])
		key = "ag:" + key + ":" + actionState(vals[2], vals[3], vals[4], vals[5], vals[6])
		start, startOK := parseMillis(vals[1])
		updated, updatedOK := parseMillis(vals[2])
		switch {
		case startOK && updatedOK:
			t = max(start, updated)
		case startOK:
			t = start
		default:
			t, _ = p.eventTime(vals[2], pollMs)
		}
	}
	if !ok {
		if vals[0] == nil {
			return "", t, fmt.Errorf("%w: no %q field", ErrNoKey, names[0])
		}
		return "", t, fmt.Errorf("%w: unusable %q value", ErrNoKey, names[0])
	}
	return key, t, nil
}

// eventTime parses a time token, falling back to pollMs (and counting it).
func (p *Processor) eventTime(tok []byte, pollMs int64) (int64, bool) {
	if t, ok := parseMillis(tok); ok {
		return t, true
	}
	p.fallbackTimes.Add(1)
	return pollMs, false
}

// actionState digests an antigena action's mutable fields into 16 hex digits.
func actionState(updated, expires, active, cleared, blocked []byte) string {
	h := sha256.New()
	for _, f := range []struct {
		name string
		tok  []byte
		time bool
	}{
		{"updated", updated, true},
		{"expires", expires, true},
		{"active", active, false},
		{"cleared", cleared, false},
		{"blocked", blocked, false},
	} {
		h.Write([]byte(f.name))
		switch ms, ok := parseMillis(f.tok); {
		case f.tok == nil:
			h.Write([]byte("\x00absent"))
		case f.time && ok:
			h.Write([]byte("=" + strconv.FormatInt(ms, 10)))
		default:
			h.Write([]byte("="))
			h.Write(f.tok)
		}
		h.Write([]byte{'\n'})
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:8])
}

// processStatus emits a /status snapshot as one event, or one per node when flattening.
func (p *Processor) processStatus(data []byte, pollMs int64, emit func(Event) error) error {
	prefix := "st:" + strconv.FormatInt(pollMs, 10) + ":"
	if !p.flatten {
		data, err := p.obfuscate(data)
		if err != nil {
			return err
		}
		return p.emit(emit, Event{Key: prefix + "master", Time: pollMs, Data: data})
	}
	root, err := parseTree(data)
	if err != nil {
		return fmt.Errorf("processing status event: %w", err)
	}
	if p.ob != nil {
		p.ob.apply(&root)
	}
	for _, n := range flattenStatus(&root) {
		ev := Event{Key: prefix + n.name, Time: pollMs, Data: appendNode(make([]byte, 0, len(data)), &n.ev)}
		if err := p.emit(emit, ev); err != nil {
			return err
		}
	}
	return nil
}

// obfuscate applies the obfuscation paths to a compact event, returning data itself when there
// are none.
func (p *Processor) obfuscate(data []byte) ([]byte, error) {
	if p.ob == nil {
		return data, nil
	}
	root, err := parseTree(data)
	if err != nil {
		return nil, fmt.Errorf("obfuscating %s event: %w", p.service, err)
	}
	p.ob.apply(&root)
	return appendNode(make([]byte, 0, len(data)), &root), nil
}

// FallbackKey returns the dedupe key of an event that has no usable key field: the service's key
// prefix ("mb", "ai", "ag", "ss", "st", or the service name for others), then ":sha256:" and the
// hex SHA-256 of the event's compact JSON. data is compacted first (when it is valid JSON), so
// the key does not depend on whitespace; an identical event fetched again gets the same key, and
// any change to it gives a new one.
func FallbackKey(service string, data []byte) string {
	if c, err := compactCopy(data); err == nil {
		data = c
	}
	sum := sha256.Sum256(data)
	return keyPrefix(service) + ":sha256:" + hex.EncodeToString(sum[:])
}

// keyPrefix returns a service's dedupe key prefix.
func keyPrefix(service string) string {
	switch service {
	case config.ServiceModelBreaches:
		return "mb"
	case config.ServiceIncidentEvents:
		return "ai"
	case config.ServiceAntigena:
		return "ag"
	case config.ServiceSummary:
		return "ss"
	case config.ServiceStatus:
		return "st"
	default:
		return service
	}
}

// SortByTime sorts events by Time, stably (ties keep response order).
func SortByTime(evs []Event) {
	slices.SortStableFunc(evs, func(a, b Event) int { return cmp.Compare(a.Time, b.Time) })
}
