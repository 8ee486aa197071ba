package proto

import (
	"errors"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSlotIDDeterministic(t *testing.T) {
	t.Parallel()
	base := SlotID("darktrace", "modelbreaches", 1000, 2000, 1, "e1")
	if again := SlotID("darktrace", "modelbreaches", 1000, 2000, 1, "e1"); again != base {
		t.Fatalf("the same slot got two IDs: %s and %s", base, again)
	}
	// Every part of the definition changes the ID: a replay, a reset or a new persistence version
	// must never be swallowed by JetStream's duplicate window as if it were the planned slot.
	others := []struct {
		name string
		id   string
	}{
		{"input", SlotID("other", "modelbreaches", 1000, 2000, 1, "e1")},
		{"service", SlotID("darktrace", "antigena", 1000, 2000, 1, "e1")},
		{"start", SlotID("darktrace", "modelbreaches", 1001, 2000, 1, "e1")},
		{"end", SlotID("darktrace", "modelbreaches", 1000, 2001, 1, "e1")},
		{"persistence version", SlotID("darktrace", "modelbreaches", 1000, 2000, 2, "e1")},
		{"epoch", SlotID("darktrace", "modelbreaches", 1000, 2000, 1, "e2")},
		{"replay lane", SlotID("darktrace", "modelbreaches", 1000, 2000, 1, "e1/replay-x")},
	}
	seen := map[string]string{base: "base"}
	for _, o := range others {
		if prev, dup := seen[o.id]; dup {
			t.Errorf("changing the %s gives the same ID as %s: %s", o.name, prev, o.id)
		}
		seen[o.id] = o.name
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	msgs := []Versioned{
		&WorkItem{V: SchemaVersion, SlotID: "id", Input: "darktrace", Service: "modelbreaches", Seq: 7, Start: 1, End: 2, PersistenceVersion: 3, Epoch: 4, Replay: true, Force: true, PlannedAt: 5},
		&Chunk{V: SchemaVersion, SlotID: "id", Seq: 7, Index: 2, Events: []Event{{K: "k1", T: 10, D: []byte(`{"a":1}`)}, {K: "k2", T: 11, D: []byte(`{"b"`), More: true}}},
		&Done{V: SchemaVersion, SlotID: "id", Input: "darktrace", Service: "status", Seq: 9, Attempt: "a1", Chunks: 3, Events: 40, Failed: true, Error: "INPUT ERROR", Worker: "w1", At: 99},
		&Failure{V: SchemaVersion, SlotID: "id", Seq: 9, Error: "boom", Attempts: 2},
		&Plan{V: SchemaVersion, NextSeq: 12, Cursor: 1000, StartConfig: "2024-05-01T00:00:00Z", PersistenceVersion: 1, Epoch: 2, Pending: []WorkItem{{V: SchemaVersion, SlotID: "p", Seq: 11}}},
		&Delivery{V: SchemaVersion, Seq: 11, NextChunk: 1, Attempt: "a", End: 5, Epoch: 2, Events: 100, Dups: 3, Failed: 1},
		&DedupeRecord{V: SchemaVersion, Keys: []string{"a", "b"}},
		&Heartbeat{V: SchemaVersion, ID: "w", Host: "h", PID: 1, Slots: 2, InFlight: 3},
		&Lease{V: SchemaVersion, Holder: "h", Acquired: 1, Renewed: 2},
	}
	for _, m := range msgs {
		t.Run(reflect.TypeOf(m).Elem().Name(), func(t *testing.T) {
			data, err := Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			got := reflect.New(reflect.TypeOf(m).Elem()).Interface().(Versioned)
			if err := Decode(data, got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("round trip changed the message:\n got %+v\nwant %+v", got, m)
			}
		})
	}
}

func TestDecodeRefusesUnknownSchema(t *testing.T) {
	t.Parallel()
	for _, v := range []int{0, SchemaVersion + 1} {
		data, err := Encode(&Delivery{V: v, Seq: 3})
		if err != nil {
			t.Fatal(err)
		}
		var d Delivery
		if err := Decode(data, &d); !errors.Is(err, ErrSchema) {
			t.Errorf("schema version %d: Decode = %v, want ErrSchema", v, err)
		}
	}
	var d Delivery
	if err := Decode([]byte{0xc1}, &d); err == nil || errors.Is(err, ErrSchema) {
		t.Errorf("garbage: Decode = %v, want a decoding error", err)
	}
}

func TestFormatMS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ms   int64
		want string
	}{
		{0, "1970-01-01T00:00:00Z"},
		{1714521600000, "2024-05-01T00:00:00Z"},
		{1714521600999, "2024-05-01T00:00:00Z"}, // to the second: milliseconds are dropped
		{-1000, "1969-12-31T23:59:59Z"},
	} {
		if got := FormatMS(tc.ms); got != tc.want {
			t.Errorf("FormatMS(%d) = %q, want %q", tc.ms, got, tc.want)
		}
	}
}

// TestNamesStayInTheirLane checks that the subjects and filters of one lane or slot never match
// another's: a shipper reading lane A's markers must not see lane B's, and purging slot 1 must
// not purge slot 10.
func TestNamesStayInTheirLane(t *testing.T) {
	t.Parallel()
	tests := []struct {
		filter, subject string
		match           bool
	}{
		{DoneFilter("dt", "modelbreaches"), DoneSubject("dt", "modelbreaches", 4), true},
		{DoneFilter("dt", "modelbreaches"), DoneSubject("dt", "antigena", 4), false},
		{DoneFilter("dt", "modelbreaches"), ChunkSubject("dt", "modelbreaches", 4, "a", 0), false},
		{SlotFilter("dt", "status", 1), ChunkSubject("dt", "status", 1, "a", 3), true},
		{SlotFilter("dt", "status", 1), DoneSubject("dt", "status", 1), true},
		{SlotFilter("dt", "status", 1), ChunkSubject("dt", "status", 10, "a", 3), false},
		{SubjectResultAll, ChunkSubject("dt", "status", 10, "a", 3), true},
		{SubjectWorkAll, WorkSubject("dt", "status"), true},
		{DedupeFilter("dt", "status", 2), DedupeKey("dt", "status", 2, 1, 2, 3, 0), true},
		{DedupeFilter("dt", "status", 2), DedupeKey("dt", "status", 20, 1, 2, 3, 0), false},
	}
	for _, tc := range tests {
		if got := subjectMatches(tc.filter, tc.subject); got != tc.match {
			t.Errorf("%q matches %q = %v, want %v", tc.filter, tc.subject, got, tc.match)
		}
	}
}

// subjectMatches is NATS subject matching: '*' is one token, '>' the rest.
func subjectMatches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

// FuzzDecode checks that no input makes Decode panic, and that what it accepts re-encodes to a
// message it accepts again: a corrupt message on the bus is an error, never a crash.
func FuzzDecode(f *testing.F) {
	for _, m := range []any{
		&Done{V: SchemaVersion, Seq: 3, Chunks: 2},
		&Chunk{V: SchemaVersion, Events: []Event{{K: "k", T: 1, D: []byte("{}")}}},
		&Delivery{V: SchemaVersion, Seq: 1},
	} {
		b, _ := msgpack.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []Versioned{&Done{}, &Chunk{}, &Delivery{}, &Plan{}, &WorkItem{}} {
			if err := Decode(data, v); err != nil {
				continue
			}
			again, err := Encode(v)
			if err != nil {
				t.Fatalf("re-encoding an accepted %T: %v", v, err)
			}
			w := reflect.New(reflect.TypeOf(v).Elem()).Interface().(Versioned)
			if err := Decode(again, w); err != nil {
				t.Fatalf("an accepted %T does not decode after re-encoding: %v", v, err)
			}
		}
	})
}

// TestDecodeBoundsDeclaredLengths: a message that declares a string far longer than itself is
// refused without allocating what it claims (FuzzDecode found nine bytes claiming 3.2 GB).
func TestDecodeBoundsDeclaredLengths(t *testing.T) {
	for _, data := range [][]byte{
		[]byte("\x8d\xa1\xbf\xdb\xbf\xbf\xbf\xbfe"), // str32 of 3.2 GB
		[]byte("\x81\xa1v\xc6\xc6\xc6\xc6\xc6a"),    // bin32 of 3.3 GB
		[]byte("\x81\xa1v\xdd\x7f\xff\xff\xff"),     // array32 of 2^31 elements
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		err := Decode(data, &Done{})
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(%q) = %v; want ErrCorrupt", data, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
			t.Errorf("Decode(%q) allocated %d bytes", data, grew)
		}
	}
}
