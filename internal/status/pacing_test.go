package status_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/proto"
)

// TestReadPacing: the fleet's pacing is the sum of the workers' recent pacing records of each
// input (a stale record of a dead worker is left out, other keys of the rate bucket are not
// records), and Print says it with the knob that binds.
func TestReadPacing(t *testing.T) {
	cfg, b := provisioned(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	in := cfg.EnabledInputs()[0]
	ceiling := cfg.Inputs[in].RequestsPerSecond
	put(t, b, proto.BucketRate, proto.PaceKey(in, "w1"), &proto.Pace{V: 1, Worker: "w1", Limit: 3, Max: 64, InFlight: 2, FloorMS: 250, At: now.Add(-2 * time.Second).UnixMilli()})
	put(t, b, proto.BucketRate, proto.PaceKey(in, "w2"), &proto.Pace{V: 1, Worker: "w2", Limit: 2, Max: 64, InFlight: 1, FloorMS: 200, At: now.UnixMilli()})
	put(t, b, proto.BucketRate, proto.PaceKey(in, "dead"), &proto.Pace{V: 1, Worker: "dead", Limit: 50, Max: 64, FloorMS: 10, At: now.Add(-time.Hour).UnixMilli()})
	put(t, b, proto.BucketRate, proto.ClockKey(in), &proto.ClockOffset{V: 1, At: now.UnixMilli()})
	kv, err := b.KV(context.Background(), proto.BucketRate)
	if err != nil {
		t.Fatal(err)
	}
	var reservation [8]byte
	binary.BigEndian.PutUint64(reservation[:], uint64(now.UnixNano()))
	if _, err := kv.Put(context.Background(), in, reservation[:]); err != nil {
		t.Fatal(err)
	}
	st, err := status.Read(context.Background(), b, cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Pacing) != len(cfg.EnabledInputs()) {
		t.Fatalf("pacing of %d inputs, want %d", len(st.Pacing), len(cfg.EnabledInputs()))
	}
	p := st.Pacing[0]
	if p.Input != in || p.Workers != 2 || p.Limit != 5 || p.Max != 128 || p.InFlight != 3 || p.FloorMS != 200 || p.Ceiling != ceiling {
		t.Fatalf("pacing %+v; want 2 workers, limit 5 of 128, 3 in flight, floor 200 ms, ceiling %g", p, ceiling)
	}
	// 5 in flight at 200 ms is 25 requests/s.
	wantRPS, wantBound := 25.0, "appliance"
	if ceiling < 25 {
		wantRPS, wantBound = ceiling, "requests_per_second"
	}
	if p.ExpectedRPS != wantRPS || p.Bound != wantBound {
		t.Errorf("expected %v requests/s bound by %q, want %v by %q", p.ExpectedRPS, p.Bound, wantRPS, wantBound)
	}
	var out bytes.Buffer
	status.Print(&out, st)
	if !strings.Contains(out.String(), "adaptive limit 5 of at most 128 in flight") {
		t.Errorf("status does not show the pacing:\n%s", out.String())
	}
}

func TestPace(t *testing.T) {
	cases := []struct {
		name       string
		ceiling    float64
		limit, max int
		floor      time.Duration
		rps        float64
		bound      string
	}{
		{"ceiling binds", 10, 8, 64, 200 * time.Millisecond, 10, "requests_per_second"},
		{"concurrency binds", 1000, 64, 64, 200 * time.Millisecond, 320, "workers.concurrency"},
		{"appliance binds", 1000, 20, 64, 200 * time.Millisecond, 100, "appliance"},
		{"no floor yet", 10, 1, 64, 0, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rps, bound := status.Pace(c.ceiling, c.limit, c.max, c.floor)
			if rps != c.rps || bound != c.bound {
				t.Errorf("Pace = %v, %q; want %v, %q", rps, bound, c.rps, c.bound)
			}
		})
	}
}
