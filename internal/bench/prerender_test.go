package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
)

// smallThroughput is a throughput bench of a few small slots with the defaults otherwise.
func smallThroughput(t *testing.T, progress io.Writer) *benchRunner {
	t.Helper()
	o := Options{Scenarios: []string{"throughput"}, Dir: t.TempDir(), Timeout: 2 * time.Minute, Jitter: -1,
		Window: time.Hour, Workers: 1, RPS: 2000, BacklogMB: config.DefaultMaxBacklogInMB,
		EventSize: 600, TPSlots: 4, TPEventsPerSlot: 60}
	return &benchRunner{o: o, logger: slog.New(slog.DiscardHandler), progress: progress}
}

// TestThroughputServedPreRendered runs a small throughput scenario and checks that every data
// request of the run was one of the slot requests rendered beforehand (the worker asks as
// slotRequests says, keyed as requestKey says), that all events were delivered, and that the
// ceiling split the same bytes the run was served.
func TestThroughputServedPreRendered(t *testing.T) {
	var progress bytes.Buffer
	r := smallThroughput(t, &progress)
	res, ceil, err := r.throughput(t.Context())
	if err != nil {
		t.Fatalf("throughput: %v\n%s", err, progress.String())
	}
	p := res.PreRendered
	if p == nil {
		t.Fatalf("the run reports no pre-rendered responses: %+v", res)
	}
	if p.Missed != 0 || p.Served != res.Requests || p.Served < int64(r.o.TPSlots) {
		t.Errorf("%d data requests: %d served pre-rendered, %d missed; want all of at least %d served", res.Requests, p.Served, p.Missed, r.o.TPSlots)
	}
	if f := res.FakesCPU; (f == nil && !profilingElsewhere()) || (f != nil && (f.FleetCPUPerMillionEvent <= 0 || f.FleetCPUPerMillionEvent > res.CPUPerMillionEvent)) {
		t.Errorf("the fakes' CPU: %+v, with %.1f CPU-s per million events in all; want the fleet's share, above 0", f, res.CPUPerMillionEvent)
	}
	if strings.Contains(progress.String(), "WARNING") {
		t.Errorf("the bench warned:\n%s", progress.String())
	}
	if res.Expected <= 0 || res.Events < res.Expected {
		t.Errorf("%d events delivered, %d expected (MISSING)", res.Events, res.Expected)
	}
	if ceil.Slots != r.o.TPSlots || ceil.ResponseBytes <= 0 || ceil.ResponseBytes > p.Bytes || ceil.Events < res.Expected {
		t.Errorf("ceiling: %d slots, %d response bytes, %d events; want %d slots, at most the file's %d bytes, at least %d events",
			ceil.Slots, ceil.ResponseBytes, ceil.Events, r.o.TPSlots, p.Bytes, res.Expected)
	}
}

// TestCeilingReadsTheFile checks that prerender writes, for every slot, exactly what the run's
// fake appliance answers the worker's request with, and that the ceiling splits the bytes of
// that file rather than rendering again: a slot blanked in the file loses its events in the
// ceiling.
func TestCeilingReadsTheFile(t *testing.T) {
	r := smallThroughput(t, io.Discard)
	env, err := r.setup(t.Context(), r.tpSpec("throughput", r.o.TPSlots))
	if err != nil {
		t.Fatal(err)
	}
	defer env.close()
	if err := env.prerender(); err != nil {
		t.Fatal(err)
	}
	if !env.pre.serve {
		t.Fatal("a throughput run without latency would not be served from the file")
	}
	file, err := os.ReadFile(env.pre.path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(file)) != env.pre.size {
		t.Fatalf("the file holds %d bytes, the index %d", len(file), env.pre.size)
	}
	_, reqs, err := env.slotRequests()
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) <= r.o.TPSlots || len(env.pre.slots) != len(reqs) {
		t.Fatalf("%d requests rendered for %d slots; want the run's slots and those planned up to now", len(env.pre.slots), r.o.TPSlots)
	}
	var total, first, runBytes int
	for i, req := range reqs {
		live, err := render(env.fake, req)
		if err != nil {
			t.Fatal(err)
		}
		sp := env.pre.index[env.pre.slots[i].key]
		if got := file[sp.off : sp.off+sp.n]; !bytes.Equal(got, live) {
			t.Errorf("slot %d: the file holds %d bytes, the fake answers %d different ones", i, len(got), len(live))
		}
		if sp.contentType != "application/json; charset=utf-8" {
			t.Errorf("slot %d: Content-Type %q", i, sp.contentType)
		}
		var evs []json.RawMessage
		if err := json.Unmarshal(live, &evs); err != nil {
			t.Fatal(err)
		}
		if i >= r.o.TPSlots {
			continue // rendered for the requests made while the run ends, not the ceiling's
		}
		total += len(evs)
		runBytes += len(live)
		if i == 0 {
			first = len(evs)
		}
	}
	if first == 0 {
		t.Fatal("slot 0 has no events")
	}
	ceil, err := env.ceiling(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if ceil.Events != int64(total) || ceil.ResponseBytes != int64(runBytes) {
		t.Fatalf("ceiling: %d events of %d bytes; the run's slots in the file have %d events of %d bytes", ceil.Events, ceil.ResponseBytes, total, runBytes)
	}

	// Blank slot 0 in the file (an empty array padded with JSON whitespace to the same length).
	sp := env.pre.index[env.pre.slots[0].key]
	blank := append(append([]byte("["), bytes.Repeat([]byte(" "), int(sp.n)-2)...), ']')
	f, err := os.OpenFile(env.pre.path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(blank, sp.off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ceil, err = env.ceiling(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(total - first); ceil.Events != want {
		t.Errorf("with slot 0 blanked in the file the ceiling split %d events, want %d", ceil.Events, want)
	}
}
