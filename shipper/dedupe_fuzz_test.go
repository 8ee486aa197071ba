package shipper

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dtfleet/dtfleet/proto"
)

// laneName is the shape config validation allows for input and service names.
var laneName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// FuzzParseDedupeKey checks that parseDedupeKey reads back the window bounds of every key
// proto.DedupeKey writes for valid names, and that on any other string it never panics and
// reports ok only with the bounds that string holds in those positions.
func FuzzParseDedupeKey(f *testing.F) {
	f.Add("darktrace", "modelbreaches", uint64(1), int64(1714566896000), int64(1714567896000), uint64(7), 0, "")
	f.Add("dt_paris", "status", uint64(0), int64(-1), int64(0), uint64(1<<63), -3, "a.b.c.d.e.f.g")
	f.Add("x", "y", uint64(2), int64(5), int64(6), uint64(3), 4, "x.y.1.2.3.4.5.6")
	f.Fuzz(func(t *testing.T, input, service string, epoch uint64, minStart, maxEnd int64, seq uint64, chunk int, raw string) {
		if laneName.MatchString(input) && laneName.MatchString(service) {
			k := proto.DedupeKey(input, service, epoch, minStart, maxEnd, seq, chunk)
			a, b, ok := parseDedupeKey(k)
			if !ok || a != minStart || b != maxEnd {
				t.Fatalf("parseDedupeKey(%q) = %d, %d, %v; want %d, %d, true", k, a, b, ok, minStart, maxEnd)
			}
		}
		a, b, ok := parseDedupeKey(raw)
		if !ok {
			if a != 0 || b != 0 {
				t.Fatalf("parseDedupeKey(%q) = %d, %d, false; want zeros", raw, a, b)
			}
			return
		}
		parts := strings.Split(raw, ".")
		if len(parts) < 7 {
			t.Fatalf("parseDedupeKey(%q) accepted %d fields", raw, len(parts))
		}
		if a != mustInt(t, parts[len(parts)-4]) {
			t.Fatalf("parseDedupeKey(%q) minStart = %d", raw, a)
		}
		if b != mustInt(t, parts[len(parts)-3]) {
			t.Fatalf("parseDedupeKey(%q) maxEnd = %d", raw, b)
		}
	})
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("parseDedupeKey accepted a non-integer field %q", s)
	}
	return v
}
