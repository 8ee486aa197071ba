package devotest

import (
	"slices"
	"testing"
)

// TestCountOnlyReportsAsFull checks that a CountOnly server, which keeps no event and copies no
// message, reports the same counts, tags, message bytes and malformed frames as a server that
// keeps every event, for a stream of every framing with tags that change and repeat.
func TestCountOnlyReportsAsFull(t *testing.T) {
	t.Parallel()
	data, want := mixedStream(t)
	full := newTestServer(t, Options{RelayAddr: "127.0.0.1:0"})
	counting := newTestServer(t, Options{RelayAddr: "127.0.0.1:0", CountOnly: true})
	for _, s := range []*Server{full, counting} {
		if err := sendRaw(t, dial(t, s.RelayAddr()), data); err != nil {
			t.Fatal(err)
		}
	}
	var msgBytes int64
	for _, e := range want {
		msgBytes += int64(len(e.Msg))
	}
	if got := full.All(); len(got) != len(want) {
		t.Fatalf("the full server kept %d events; want %d", len(got), len(want))
	}
	if got := counting.All(); got != nil {
		t.Errorf("the CountOnly server kept %d events", len(got))
	}
	for _, s := range []struct {
		name string
		s    *Server
	}{{"full", full}, {"CountOnly", counting}} {
		if s.s.Count() != len(want) || s.s.Bytes() != msgBytes {
			t.Errorf("%s: Count %d, Bytes %d; want %d, %d", s.name, s.s.Count(), s.s.Bytes(), len(want), msgBytes)
		}
		for tag, n := range map[string]int{"my.app.one": 3, "my.app.test.multi": 1, "my.app.gz": 3, "my.app.other": 0} {
			if got := s.s.CountTag(tag); got != n {
				t.Errorf("%s: CountTag(%s) = %d; want %d", s.name, tag, got, n)
			}
		}
		if tags := s.s.Tags(); !slices.Equal(tags, []string{"my.app.gz", "my.app.one", "my.app.test.multi"}) {
			t.Errorf("%s: Tags = %q", s.name, tags)
		}
		if m := s.s.Malformed(); s.s.MalformedCount() != 1 || len(m) != 1 || m[0] != "not syslog at all" {
			t.Errorf("%s: %d malformed frames %q; want the one non-syslog line", s.name, s.s.MalformedCount(), m)
		}
	}
}
