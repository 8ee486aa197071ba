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
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/jsonscan"
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
// Process does not fail with it: it delivers such an event under FallbackKey and logs it.
var ErrNoKey = errors.New("event has no usable key")

// ErrUnknownService is wrapped by NewProcessor's error for a service it does not know.
var ErrUnknownService = errors.New("unknown service")

// Processor turns the raw events of one service into Events. It is safe for concurrent use.
type Processor struct {
	service string
	flatten bool
	ob      *obfuscator
	log     *slog.Logger
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

// Process turns one raw event (as jsonscan.Split yields it) into zero or more Events (status flattening yields
// several) and calls emit for each, stopping at and returning emit's first error. pollTime is the
// slot's poll time (used for snapshots' keys and times). raw must be one JSON value; Process
// validates and compacts it, and fails with an error wrapping jsonscan.ErrMalformed otherwise. Process
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
// time is replaced by pollTime. An event whose key field is missing or unusable is not an error:
// it is emitted under FallbackKey(service, compact original event) and logged as a warning
// (without its contents), so it is neither dropped nor duplicated when fetched again unchanged.
func (p *Processor) Process(raw []byte, pollTime time.Time, emit func(Event) error) error {
	names := p.fields()
	// The key and time fields are read in the pass that validates and compacts the event.
	var buf [8][]byte
	vals := buf[:len(names)]
	data, err := jsonscan.CompactLookup(raw, names, vals)
	if err != nil {
		return fmt.Errorf("processing %s event: %w", p.service, err)
	}
	return p.process(data, true, vals, pollTime.UnixMilli(), emit)
}

// Fields returns the names of the top-level members whose value tokens ProcessFound needs (nil
// for the snapshot services). The caller must not modify it.
func (p *Processor) Fields() []string { return p.fields() }

// ProcessFound is Process for an event already validated, compacted and scanned in the pass
// that split it from its response: raw is a value as jsonscan.SplitLookup yields it, and vals
// the tokens SplitLookup found in raw for Fields(). It produces exactly the Events Process
// produces for raw, without scanning raw again (besides the copy the Events own and what
// obfuscation and status flattening read). It does not keep raw or vals.
func (p *Processor) ProcessFound(raw []byte, vals [][]byte, pollTime time.Time, emit func(Event) error) error {
	return p.process(raw, false, vals, pollTime.UnixMilli(), emit)
}

// ProcessFoundLent is ProcessFound for an emit that copies what it keeps: the Events' Data may be
// raw itself, valid only until emit returns, so the event is not copied here (a caller that
// copies it anyway, into memory it reuses, saves an allocation per event).
func (p *Processor) ProcessFoundLent(raw []byte, vals [][]byte, pollTime time.Time, emit func(Event) error) error {
	return p.process(raw, true, vals, pollTime.UnixMilli(), emit)
}

// process turns the compact event data, whose top-level tokens of p.fields() are vals, into
// Events. owned says whether data may be handed on in an Event (else it is copied first, unless
// obfuscation or flattening rebuilds it anyway).
func (p *Processor) process(data []byte, owned bool, vals [][]byte, pollMs int64, emit func(Event) error) error {
	var err error
	switch p.service {
	case config.ServiceStatus:
		return p.processStatus(data, owned, pollMs, emit)
	case config.ServiceSummary:
		data, err = p.obfuscate(data, owned)
		if err != nil {
			return err
		}
		return emit(Event{Key: "ss:" + strconv.FormatInt(pollMs, 10), Time: pollMs, Data: data})
	}
	key, t, err := p.route(data, vals, pollMs)
	if err != nil {
		key = FallbackKey(p.service, data)
		p.log.Warn("event delivered under a fallback key", "key", key, "err", err)
	}
	data, err = p.obfuscate(data, owned)
	if err != nil {
		return err
	}
	return emit(Event{Key: key, Time: t, Data: data})
}

// Names of the fields route reads, per service; the first is the key field.
var (
	breachFields   = []string{"pbid", "time"}
	incidentFields = []string{"id", "createdAt"}
	actionFields   = []string{"codeid", "start", "updated", "expires", "active", "cleared", "blocked"}
)

// fields returns the names of the top-level fields route reads for p's service (none for the
// snapshot services).
func (p *Processor) fields() []string {
	switch p.service {
	case config.ServiceModelBreaches:
		return breachFields
	case config.ServiceIncidentEvents:
		return incidentFields
	case config.ServiceAntigena:
		return actionFields
	default:
		return nil
	}
}

// route reads a windowed service's event key and time from vals, the value tokens of the fields
// of p.fields() in the compact event data. Its error wraps ErrNoKey when the key is missing or
// unusable; the time is still set then.
func (p *Processor) route(data []byte, vals [][]byte, pollMs int64) (string, int64, error) {
	if len(data) == 0 || data[0] != '{' {
		return "", pollMs, fmt.Errorf("%w: event is not a JSON object", ErrNoKey)
	}
	names := p.fields()
	var (
		key string
		ok  bool
		t   int64
	)
	switch p.service {
	case config.ServiceModelBreaches:
		var buf [24]byte
		var b []byte
		b, ok = appendID(append(buf[:0], "mb:"...), vals[0])
		key = string(b)
		t = eventTime(vals[1], pollMs)
	case config.ServiceIncidentEvents:
		var buf [48]byte
		var b []byte
		b, ok = appendTextID(append(buf[:0], "ai:"...), vals[0])
		key = string(b)
		t = eventTime(vals[1], pollMs)
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
			t = eventTime(vals[2], pollMs)
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

// eventTime parses a time token, falling back to pollMs.
func eventTime(tok []byte, pollMs int64) int64 {
	if t, ok := parseMillis(tok); ok {
		return t
	}
	return pollMs
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
func (p *Processor) processStatus(data []byte, owned bool, pollMs int64, emit func(Event) error) error {
	prefix := "st:" + strconv.FormatInt(pollMs, 10) + ":"
	if !p.flatten {
		data, err := p.obfuscate(data, owned)
		if err != nil {
			return err
		}
		return emit(Event{Key: prefix + "master", Time: pollMs, Data: data})
	}
	root, err := jsonscan.Parse(data)
	if err != nil {
		return fmt.Errorf("processing status event: %w", err)
	}
	if p.ob != nil {
		p.ob.apply(&root)
	}
	for _, n := range flattenStatus(&root) {
		ev := Event{Key: prefix + n.name, Time: pollMs, Data: n.ev.Append(make([]byte, 0, len(data)))}
		if err := emit(ev); err != nil {
			return err
		}
	}
	return nil
}

// obfuscate applies the obfuscation paths to a compact event, returning data itself when there
// are none and data is owned, else a copy of it.
func (p *Processor) obfuscate(data []byte, owned bool) ([]byte, error) {
	if p.ob == nil {
		if !owned {
			data = append(data[:0:0], data...) // not make+copy: that would clear the buffer first
		}
		return data, nil
	}
	root, err := jsonscan.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("obfuscating %s event: %w", p.service, err)
	}
	p.ob.apply(&root)
	return root.Append(make([]byte, 0, len(data))), nil
}

// FallbackKey returns the dedupe key of an event that has no usable key field: the service's key
// prefix ("mb", "ai", "ag", "ss", "st", or the service name for others), then ":sha256:" and the
// hex SHA-256 of the event's compact JSON. data is compacted first (when it is valid JSON), so
// the key does not depend on whitespace; an identical event fetched again gets the same key, and
// any change to it gives a new one.
func FallbackKey(service string, data []byte) string {
	if c, err := jsonscan.Compact(data); err == nil {
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
