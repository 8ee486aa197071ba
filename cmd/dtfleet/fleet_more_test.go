package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

func laneOf(t *testing.T, cfg *config.Config, service string) config.Lane {
	t.Helper()
	for _, ln := range cfg.Lanes() {
		if ln.Service == service {
			return ln
		}
	}
	t.Fatalf("no lane %s", service)
	return config.Lane{}
}

func TestFleetRestartMidBackfill(t *testing.T) {
	env := newFleetEnv(t, 5, "")
	rec := newRecorder()
	stop, busc := startFleet(t, env.cfg, fleetOptions{outputs: []devo.Output{rec}})
	<-busc
	deadline := time.Now().Add(time.Minute)
	for len(rec.events("edr.darktrace.respond.model_breach")) < 200 {
		if time.Now().After(deadline) {
			t.Fatal("no progress")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mid := len(rec.events("edr.darktrace.respond.model_breach"))
	_, busc = startFleet(t, env.cfg, fleetOptions{outputs: []devo.Output{rec}})
	b := <-busc
	waitCaughtUp(t, b, env.cfg, env.end, 3*time.Minute)
	t.Logf("stopped after %d breaches, restarted", mid)
	checkExactlyOnce(t, env, rec.events)
}

func TestFleetDeliveryFailuresRetried(t *testing.T) {
	env := newFleetEnv(t, 2, "")
	rec := newRecorder()
	for i := 1; i < 40; i += 3 {
		rec.failAt[i] = true
	}
	_, busc := startFleet(t, env.cfg, fleetOptions{outputs: []devo.Output{rec}})
	b := <-busc
	waitCaughtUp(t, b, env.cfg, env.end, 3*time.Minute)
	checkExactlyOnce(t, env, rec.events)
}

func TestFleetFailedSlotRecordedAndReplayed(t *testing.T) {
	env := newFleetEnv(t, 2, "")
	// The fake's data is generated per clock hour, so pick the first hour that holds incident
	// events (at about two an hour, some hours hold none).
	bad := env.start.Add(5 * time.Hour)
	for len(env.fake.AllEvents(config.ServiceIncidentEvents, bad, bad.Add(time.Hour))) == 0 {
		if bad = bad.Add(time.Hour); !bad.Before(env.end) {
			t.Fatal("the fake holds no incident events")
		}
	}
	env.fake.SetInputError(config.ServiceIncidentEvents, bad, bad.Add(time.Hour), true)
	rec := newRecorder()
	_, busc := startFleet(t, env.cfg, fleetOptions{outputs: []devo.Output{rec}})
	b := <-busc
	// The failed slot does not block the lane: it catches up to the end.
	waitCaughtUp(t, b, env.cfg, env.end, 3*time.Minute)
	st, err := collectStatus(context.Background(), b, env.cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Failed) != 1 || st.Failed[0].Service != config.ServiceIncidentEvents || !st.Failed[0].From.Equal(bad) {
		t.Fatalf("failed slots in status: %+v", st.Failed)
	}
	if !strings.Contains(st.Failed[0].Error, "INPUT ERROR") {
		t.Errorf("failure record does not say why: %q", st.Failed[0].Error)
	}
	var buf strings.Builder
	printStatus(&buf, st)
	if !strings.Contains(buf.String(), "failed slots (retried automatically when a next retry is shown; dtfleet replay replays one now): 1") ||
		!strings.Contains(buf.String(), "next retry") {
		t.Errorf("status output does not show the failed slot:\n%s", buf.String())
	}
	lost := len(env.fake.AllEvents(config.ServiceIncidentEvents, bad, bad.Add(time.Hour)))
	if lost == 0 {
		t.Fatal("the failed window holds no events; the test proves nothing")
	}
	pre := rec.events("edr.darktrace.respond.incident_event")
	got := len(pre)
	var last int64
	for i, raw := range pre {
		if ts := eventTime(t, config.ServiceIncidentEvents, raw); ts < last {
			t.Fatalf("before the replay, incident event %d at %d was delivered after one at %d", i, ts, last)
		} else {
			last = ts
		}
	}
	// The next slot's look-back (15 minutes) already recovers the end of the failed window.
	if all := len(env.fake.Keys(config.ServiceIncidentEvents)); got < all-lost || got >= all {
		t.Fatalf("before the replay %d incident events were delivered, want from %d to %d", got, all-lost, all-1)
	}
	// The fault goes away; a replay of the window recovers it and clears the record.
	env.fake.SetInputError(config.ServiceIncidentEvents, bad, bad.Add(time.Hour), false)
	ln := laneOf(t, env.cfg, config.ServiceIncidentEvents)
	if _, err := coordinator.Replay(context.Background(), b, b.JS, ln, bad, bad.Add(time.Hour), coordinator.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := collectStatus(context.Background(), b, env.cfg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Failed) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replay did not clear the failure record: %+v", st.Failed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The replayed window arrives after the slots that follow it, so order is checked above.
	checkDelivered(t, env, rec.events, map[string]bool{config.ServiceIncidentEvents: true})
}

func TestFleetReplayForceAndDedupe(t *testing.T) {
	env := newFleetEnv(t, 2, "")
	rec := newRecorder()
	_, busc := startFleet(t, env.cfg, fleetOptions{outputs: []devo.Output{rec}})
	b := <-busc
	waitCaughtUp(t, b, env.cfg, env.end, 3*time.Minute)
	tag := "edr.darktrace.respond.model_breach"
	before := len(rec.events(tag))
	ln := laneOf(t, env.cfg, config.ServiceModelBreaches)
	from, to := env.start.Add(10*time.Hour), env.start.Add(14*time.Hour)
	want := len(env.fake.AllEvents(config.ServiceModelBreaches, from, to))
	if want == 0 {
		t.Fatal("empty replay range")
	}
	// Without --force: nothing is added.
	items, err := coordinator.Replay(context.Background(), b, b.JS, ln, from, to, coordinator.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitSeq(t, b, ln, items[len(items)-1].Seq)
	if n := len(rec.events(tag)); n != before {
		t.Fatalf("replay without --force added %d events", n-before)
	}
	// With --force: the range is delivered again (with its look-back, as a fetch would).
	items, err = coordinator.Replay(context.Background(), b, b.JS, ln, from, to, coordinator.ReplayOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	waitSeq(t, b, ln, items[len(items)-1].Seq)
	added := rec.events(tag)[before:]
	inRange := 0
	for _, raw := range added {
		if ts := eventTime(t, config.ServiceModelBreaches, raw); ts >= from.UnixMilli() && ts < to.UnixMilli() {
			inRange++
		}
	}
	if inRange != want {
		t.Fatalf("replay --force re-delivered %d events of the range, want %d", inRange, want)
	}
}

// waitSeq waits until the lane delivered seq.
func waitSeq(t *testing.T, b *bus.Bus, ln config.Lane, seq uint64) {
	t.Helper()
	kv, err := b.KV(context.Background(), proto.BucketDelivered)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		e, err := kv.Get(context.Background(), proto.LaneKey(ln.Input, ln.Service))
		if err == nil {
			var d proto.Delivery
			if err := proto.Decode(e.Value(), &d); err != nil {
				t.Fatal(err)
			}
			if d.Seq >= seq {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not deliver seq %d", ln.Key(), seq)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
