package bench

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/worker/darktrace"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
	"github.com/dtfleet/dtfleet/worker/events"
)

// ceilingFixture is a fake appliance with an hour of 2 KB breaches and the lane that reads it.
func ceilingFixture(t testing.TB, perHour float64) (*darktracetest.Handler, config.Lane, time.Time) {
	t.Helper()
	start := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	fake := darktracetest.NewHandler(darktracetest.Options{Seed: 1, Start: start, End: start.Add(2 * time.Hour),
		EventsPerHour: map[string]float64{config.ServiceModelBreaches: perHour}, EventSize: 2048})
	t.Cleanup(fake.Close)
	ln := config.Lane{Input: "darktrace", Service: config.ServiceModelBreaches,
		Svc: config.Service{Endpoint: "/modelbreaches", Tag: "siem.darktrace.respond.modelbreaches"}}
	return fake, ln, start
}

// TestSplitEncoderLines checks that the ceiling's path writes, for a response the fake renders
// as the worker requests it, exactly the lines the fleet delivers: one per event of the
// response (as encoding/json splits it), each the event processed by the worker's processor and
// encoded by the shipper's encoder, in response order.
func TestSplitEncoderLines(t *testing.T) {
	fake, ln, start := ceilingFixture(t, 500)
	end := start.Add(time.Hour)
	body, err := render(fake, darktrace.Request{Service: ln.Service, Endpoint: ln.Svc.Endpoint, Start: start, End: end})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := newSplitEncoder(ln, 8<<20, "bench-host")
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	sp.out = &got
	if err := sp.run(body, start); err != nil {
		t.Fatal(err)
	}

	proc, err := events.NewProcessor(events.Options{Service: ln.Service})
	if err != nil {
		t.Fatal(err)
	}
	// The reference splits the body with encoding/json, independently of the worker's splitter.
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		t.Fatal(err)
	}
	if len(raws) < 100 {
		t.Fatalf("the fake rendered %d events for an hour at 500/h", len(raws))
	}
	var want []byte
	for _, raw := range raws {
		if err := proc.Process(raw, start, func(ev events.Event) error {
			want = devo.AppendLine(want, ev.Time, "bench-host", ln.Svc.Tag, ev.Data)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if sp.events != int64(len(raws)) {
		t.Errorf("split-encoder counted %d events, the fake rendered %d", sp.events, len(raws))
	}
	if sp.lineBytes != int64(got.Len()) {
		t.Errorf("split-encoder counted %d line bytes, wrote %d", sp.lineBytes, got.Len())
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("split-encoder lines differ from the processed events' lines (%d vs %d bytes)", got.Len(), len(want))
	}
}

// BenchmarkSplitEncode is the ceiling's path on one response of 2 KB breaches: split, processed
// and encoded as Devo lines in memory.
func BenchmarkSplitEncode(b *testing.B) {
	fake, ln, start := ceilingFixture(b, 5000)
	body, err := render(fake, darktrace.Request{Service: ln.Service, Endpoint: ln.Svc.Endpoint, Start: start, End: start.Add(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	sp, err := newSplitEncoder(ln, 8<<20, "bench-host")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := sp.run(body, start); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(sp.events)/float64(b.N), "events/op")
}
