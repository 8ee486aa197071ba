// Package proto is the leaf package for everything that crosses the bus: the messages (work items,
// result chunks, slot markers, failure records, checkpoints) encoded with msgpack and a schema
// version, and every subject, stream, consumer, KV bucket and key name. It imports no role package.
//
// The data path, and where each guarantee of DESIGN.md is enforced:
//
//   - The coordinator reserves slots in the plan checkpoint (KV, revision-checked) before it
//     publishes them to StreamWork with their SlotID as Nats-Msg-Id, and clears the reservation
//     only after JetStream acknowledged every publish. A crash in between leaves the reservation,
//     which the next leader republishes under the same IDs (no loss, no second plan).
//   - Sequence numbers per lane (input, service) are contiguous: every reserved Seq is published,
//     and every published Seq ends with exactly one kind of marker (delivered events or a failure),
//     so the shipper's "deliver Seq+1 next" never waits on a hole.
//   - A worker publishes a slot's events as chunks under an attempt-specific subject and only then
//     the slot's done marker; the shipper only reads chunks named by a done marker, so a half-written
//     attempt is never delivered.
//   - The shipper moves the delivery checkpoint after every output confirmed the batch and after the
//     batch's dedupe keys are stored, so a crash resends at most the batch in flight.
package proto

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/vmihailenco/msgpack/v5"
)

// SchemaVersion is the version of every message and checkpoint this build writes. Readers refuse
// newer versions (ErrSchema) instead of misreading them.
const SchemaVersion = 1

// Stream, consumer and bucket names.
const (
	StreamWork      = "DTF_WORK"    // work items, work-queue retention
	StreamResults   = "DTF_RESULTS" // result chunks and slot markers
	ConsumerWorkers = "dtf_workers" // the workers' shared durable pull consumer

	BucketPlan      = "dtf_plan"      // plan checkpoints, key LaneKey
	BucketDelivered = "dtf_delivered" // delivery checkpoints, key LaneKey
	BucketDedupe    = "dtf_dedupe"    // delivered event keys per batch, key DedupeKey
	BucketLeases    = "dtf_leases"    // leader leases (TTL), keys LeaseCoordinator, ShipperLease
	BucketFailed    = "dtf_failed"    // failure records, key FailedKey
	BucketWorkers   = "dtf_workers"   // worker heartbeats (TTL), key = worker id
	BucketRate      = "dtf_rate"      // fleet-wide request reservations per input, key = input name
)

// LeaseCoordinator is the coordinator's lease key.
const LeaseCoordinator = "coordinator"

// Subject roots.
const (
	SubjectWorkAll   = "dtf.work.>"
	SubjectResultAll = "dtf.result.>"
)

// FormatMS formats epoch milliseconds (the times of slots and events on the bus) as RFC 3339 in
// UTC, to the second: the form every role logs slot bounds in, so that a slot's log lines can be
// matched across roles and pasted into `dtfleet replay --from/--to`.
func FormatMS(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.RFC3339) }

// FormatMSExact formats epoch milliseconds as RFC 3339 in UTC with exactly three fractional
// digits, so that parsing it gives back ms: the form of the times in a replay command, which must
// name a failed slot's window to the millisecond for the replay to clear its record.
func FormatMSExact(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// ReplayCommand is the command line that replays the window [start, end) of a lane exactly: the
// replayed slot has the same bounds as a failed slot of that window, so delivering it clears the
// slot's failure record (FailedKey). It lacks the -c flag, which the operator adds.
func ReplayCommand(input, service string, start, end int64) string {
	return fmt.Sprintf("dtfleet replay --input %s --service %s --from %s --to %s", input, service, FormatMSExact(start), FormatMSExact(end))
}

// LaneKey is the KV key of a lane's checkpoints.
func LaneKey(input, service string) string { return input + "." + service }

// ShipperLease is the lease key of a lane's shipper.
func ShipperLease(input, service string) string { return "shipper." + input + "." + service }

// WorkSubject is the subject a lane's work items are published on.
func WorkSubject(input, service string) string { return "dtf.work." + input + "." + service }

// ChunkSubject is the subject of one result chunk of one attempt at a slot.
func ChunkSubject(input, service string, seq uint64, attempt string, chunk int) string {
	return "dtf.result." + input + "." + service + "." + strconv.FormatUint(seq, 10) + "." + attempt + "." + strconv.Itoa(chunk)
}

// DoneSubject is the subject of a slot's done markers.
func DoneSubject(input, service string, seq uint64) string {
	return "dtf.result." + input + "." + service + "." + strconv.FormatUint(seq, 10) + ".done"
}

// DoneFilter matches every done marker of a lane.
func DoneFilter(input, service string) string {
	return "dtf.result." + input + "." + service + ".*.done"
}

// SlotFilter matches every message (chunks and markers) of one slot, for purging after delivery.
func SlotFilter(input, service string, seq uint64) string {
	return "dtf.result." + input + "." + service + "." + strconv.FormatUint(seq, 10) + ".>"
}

// FailedKey is the KV key of a failure record: one per lane and window, so a replay that delivers
// the same window clears it.
func FailedKey(input, service string, start, end int64) string {
	return fmt.Sprintf("%s.%s.%d_%d", input, service, start, end)
}

// DedupeKey is the KV key of one delivered batch's event keys. The window bounds in the key let a
// shipper find the records that overlap a window without reading every value.
func DedupeKey(input, service string, epoch uint64, minStart, maxEnd int64, firstSeq uint64, firstChunk int) string {
	return fmt.Sprintf("%s.%s.%d.%d.%d.%d.%d", input, service, epoch, minStart, maxEnd, firstSeq, firstChunk)
}

// DedupeFilter matches every dedupe record of a lane's epoch.
func DedupeFilter(input, service string, epoch uint64) string {
	return fmt.Sprintf("%s.%s.%d.>", input, service, epoch)
}

// slotNamespace is the UUID namespace of slot IDs.
var slotNamespace = uuid.MustParse("6f1d3c52-8e2b-4f55-9a57-0d1a5e9b2c11")

// SlotID is the deterministic ID of a slot: a UUID v5 of input, service, window, persistence
// version and lane. The lane is "e<epoch>" for planned slots and "e<epoch>/replay-<id>" for
// replays, so a republished slot is caught by JetStream's duplicate window while a replay or a
// persistence reset gets fresh IDs.
func SlotID(input, service string, start, end int64, persistenceVersion int, lane string) string {
	name := fmt.Sprintf("%s|%s|%d|%d|%d|%s", input, service, start, end, persistenceVersion, lane)
	return uuid.NewSHA1(slotNamespace, []byte(name)).String()
}

// ErrCorrupt is returned when a message is not well-formed msgpack or declares more bytes than
// it holds: reading it again cannot fix it.
var ErrCorrupt = errors.New("corrupt message")

// ErrSchema is returned when a message has a schema version this build does not know.
var ErrSchema = errors.New("unsupported schema version")

// WorkItem is one slot to fetch.
type WorkItem struct {
	V                  int    `msgpack:"v"`
	SlotID             string `msgpack:"id"`
	Input              string `msgpack:"in"`
	Service            string `msgpack:"svc"`
	Seq                uint64 `msgpack:"seq"`
	Start              int64  `msgpack:"s"` // window start, epoch ms (inclusive); snapshots: period start
	End                int64  `msgpack:"e"` // window end, epoch ms (exclusive)
	PersistenceVersion int    `msgpack:"pv"`
	Epoch              uint64 `msgpack:"ep"`
	Replay             bool   `msgpack:"rp,omitempty"`
	Force              bool   `msgpack:"f,omitempty"` // replay --force: the shipper bypasses dedupe
	PlannedAt          int64  `msgpack:"at"`
	// Retry counts the automatic retries of a failed slot (0 for a planned slot or a manual replay).
	Retry int `msgpack:"rt,omitempty"`
}

// Event is one processed event inside a chunk. An event larger than a chunk is split into parts:
// every part but the last has More set, and the parts follow each other across chunks.
type Event struct {
	K    string `msgpack:"k"`
	T    int64  `msgpack:"t"`
	D    []byte `msgpack:"d"`
	More bool   `msgpack:"m,omitempty"`
}

// Chunk is one piece of a slot's result.
type Chunk struct {
	V      int     `msgpack:"v"`
	SlotID string  `msgpack:"id"`
	Seq    uint64  `msgpack:"seq"`
	Index  int     `msgpack:"i"`
	Events []Event `msgpack:"ev"`
}

// Done marks the end of one attempt at a slot: either its chunks are all published (Chunks of
// them), or the slot failed for good (Failed, with Error).
type Done struct {
	V       int    `msgpack:"v"`
	SlotID  string `msgpack:"id"`
	Input   string `msgpack:"in"`
	Service string `msgpack:"svc"`
	Seq     uint64 `msgpack:"seq"`
	Attempt string `msgpack:"a"`
	Start   int64  `msgpack:"s"`
	End     int64  `msgpack:"e"`
	Epoch   uint64 `msgpack:"ep"`
	Force   bool   `msgpack:"f,omitempty"`
	Replay  bool   `msgpack:"rp,omitempty"`
	Chunks  int    `msgpack:"n"`
	Events  int    `msgpack:"ne"`
	Failed  bool   `msgpack:"x,omitempty"`
	// Dropped counts the slot's events the worker dropped as larger than
	// workers.max_event_size_in_mb (their keys are in the worker's log).
	Dropped int    `msgpack:"dr,omitempty"`
	Error   string `msgpack:"err,omitempty"`
	Worker  string `msgpack:"w"`
	At      int64  `msgpack:"at"`
}

// Failure is the record a slot that failed for good leaves in BucketFailed, until a replay
// delivers its window.
type Failure struct {
	V        int    `msgpack:"v"`
	SlotID   string `msgpack:"id"`
	Input    string `msgpack:"in"`
	Service  string `msgpack:"svc"`
	Seq      uint64 `msgpack:"seq"`
	Start    int64  `msgpack:"s"`
	End      int64  `msgpack:"e"`
	Error    string `msgpack:"err"`
	Attempts uint64 `msgpack:"n"`
	Worker   string `msgpack:"w"`
	At       int64  `msgpack:"at"`
	// Retries counts the automatic retries that failed before this record; NextRetry (epoch ms) is
	// when the coordinator replays the slot next, 0 when no retry is scheduled (automatic retries
	// off, or one in flight).
	Retries   int   `msgpack:"rt,omitempty"`
	NextRetry int64 `msgpack:"nr,omitempty"`
	// Event, set on the record of one event that failed while its slot was delivered (an event
	// over workers.max_event_size_in_mb), names it: its dedupe key, or "index N" (its place in
	// the slot's response) when the key could not be read. Key is then the record's own key in
	// BucketFailed (FailedEventKey), which the slot's delivery does not clear.
	Event string `msgpack:"ev,omitempty"`
	Key   string `msgpack:"k,omitempty"`
}

// FailedEventKey is the KV key of the failure record of one event of a slot: the slot's
// FailedKey, ".event." and id (KV-safe: hex or digits), so fetching the slot again rewrites the
// same record.
func FailedEventKey(input, service string, start, end int64, id string) string {
	return FailedKey(input, service, start, end) + ".event." + id
}

// PausedStorageKey is the key, in BucketPlan, of the Paused record the leading coordinator keeps
// while it plans nothing new because the JetStream storage the KV buckets share is nearly full;
// it is deleted when planning resumes.
const PausedStorageKey = "paused.storage"

// Paused says why the leading coordinator stopped planning, for status.
type Paused struct {
	V      int    `msgpack:"v"`
	Reason string `msgpack:"r"`
	Used   uint64 `msgpack:"u"` // bytes used of Room
	Room   uint64 `msgpack:"m"`
	At     int64  `msgpack:"at"` // when planning stopped, epoch ms
}

// ClockKey is the key, in BucketRate, of an input's ClockOffset.
func ClockKey(input string) string { return "clock." + input }

// ClockOffset is the appliance's clock minus the host clock of the worker that saw it last, from
// the Date header of the appliance's answers: the coordinator plans no window beyond the
// appliance's own now, whatever the hosts' clocks say.
type ClockOffset struct {
	V        int   `msgpack:"v"`
	OffsetMS int64 `msgpack:"off"`
	At       int64 `msgpack:"at"` // host time of the observation, epoch ms
}

// Plan is a lane's plan checkpoint.
type Plan struct {
	V       int    `msgpack:"v"`
	NextSeq uint64 `msgpack:"next"` // the next sequence number to assign; sequences start at 1
	// Cursor is the start of the next window to plan (windowed services), or the start of the last
	// planned period (snapshot services; 0 when none).
	Cursor             int64  `msgpack:"cur"`
	StartConfig        string `msgpack:"sc"` // start_time_in_utc_format as configured when the lane was (re)set
	PersistenceVersion int    `msgpack:"pv"`
	Epoch              uint64 `msgpack:"ep"`
	// Pending are reserved slots not yet confirmed published. They are republished, under the
	// same IDs, until a publish of all of them is acknowledged.
	Pending   []WorkItem `msgpack:"pend"`
	UpdatedAt int64      `msgpack:"at"`
}

// Delivery is a lane's delivery checkpoint.
type Delivery struct {
	V         int    `msgpack:"v"`
	Seq       uint64 `msgpack:"seq"` // last slot fully delivered
	NextChunk int    `msgpack:"nc"`  // chunks of Seq+1 already delivered (from Attempt)
	Attempt   string `msgpack:"a"`   // attempt of Seq+1 that NextChunk refers to
	End       int64  `msgpack:"end"` // window end of Seq
	Epoch     uint64 `msgpack:"ep"`  // epoch of the last delivered slot
	Events    uint64 `msgpack:"ev"`  // events delivered, all time
	// ResultBytes is the event JSON read from the lane's results, duplicates included, all time:
	// with Seq it tells the coordinator how big the lane's slots are.
	ResultBytes uint64 `msgpack:"rb"`
	Dups        uint64 `msgpack:"dup"`  // duplicates dropped, all time
	Failed      uint64 `msgpack:"fail"` // slots passed over because they failed for good
	UpdatedAt   int64  `msgpack:"at"`
}

// DedupeRecord holds the event keys one delivered batch carried.
type DedupeRecord struct {
	V    int      `msgpack:"v"`
	Keys []string `msgpack:"k"`
}

// Heartbeat is a worker's liveness record.
type Heartbeat struct {
	V         int    `msgpack:"v"`
	ID        string `msgpack:"id"`
	Host      string `msgpack:"host"`
	PID       int    `msgpack:"pid"`
	Started   int64  `msgpack:"st"`
	Slots     uint64 `msgpack:"n"`
	InFlight  int    `msgpack:"if"`
	UpdatedAt int64  `msgpack:"at"`
}

// Lease is the value of a leader lease.
type Lease struct {
	V        int    `msgpack:"v"`
	Holder   string `msgpack:"h"`
	Acquired int64  `msgpack:"acq"`
	Renewed  int64  `msgpack:"ren"`
	// Host and PID say where the holder runs, for `dtfleet status` (empty from older builds).
	Host string `msgpack:"host,omitempty"`
	PID  int    `msgpack:"pid,omitempty"`
}

// Versioned is implemented by every message, so Decode can check the schema version.
type Versioned interface{ version() int }

func (m *WorkItem) version() int     { return m.V }
func (m *Paused) version() int       { return m.V }
func (m *Chunk) version() int        { return m.V }
func (m *Done) version() int         { return m.V }
func (m *Failure) version() int      { return m.V }
func (m *Plan) version() int         { return m.V }
func (m *Delivery) version() int     { return m.V }
func (m *DedupeRecord) version() int { return m.V }
func (m *Heartbeat) version() int    { return m.V }
func (m *Lease) version() int        { return m.V }
func (m *ClockOffset) version() int  { return m.V }

// Encode marshals a message with msgpack. Callers set V to SchemaVersion.
func Encode(v any) ([]byte, error) { return msgpack.Marshal(v) }

// Decode unmarshals a message and refuses schema versions newer than SchemaVersion.
func Decode(data []byte, v Versioned) error {
	// Every length the message declares is checked against the bytes it holds before the
	// library decodes it: msgpack.Unmarshal allocates what a string or array header claims, so
	// nine bytes claiming a 3 GB string would cost 3 GB (found by FuzzDecode; kept as corpus).
	if err := (&decoder{b: data}).skip(); err != nil {
		return fmt.Errorf("decoding %T: %w: %w", v, ErrCorrupt, err)
	}
	if err := msgpack.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decoding %T: %w", v, err)
	}
	if v.version() < 1 || v.version() > SchemaVersion {
		return fmt.Errorf("decoding %T: %w %d (this build knows %d)", v, ErrSchema, v.version(), SchemaVersion)
	}
	return nil
}
