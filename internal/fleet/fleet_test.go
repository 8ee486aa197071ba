package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/coordinator"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// httptest's idle keep-alive connections and the embedded server's leftovers close asynchronously.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

const breachTag = "edr.darktrace.respond.model_breach"

func TestFleetBackfillExactlyOnce(t *testing.T) {
	env := fleettest.NewEnv(t, 7)
	rec := fleettest.NewRecorder()
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config, Deps: fleet.Dependencies{Outputs: []devo.Output{rec}}})
	fleettest.WaitCaughtUp(t, f.Bus, env.Config, env.End, 3*time.Minute)
	fleettest.CheckExactlyOnce(t, env.Fake, env.Config, rec.Events)
}

// TestStartWaitCaughtUp: the demo's and the bench's way of running a fleet reports a caught-up
// backfill, and its progress (status.Read through Running.Status) counts every delivered event.
func TestStartWaitCaughtUp(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	rec := fleettest.NewRecorder()
	f, err := fleet.Start(context.Background(), fleet.Fleet{Config: env.Config, Roles: fleet.AllRoles,
		Deps: fleet.Dependencies{Outputs: []devo.Output{rec}, Logger: fleettest.Logger(t)}, Overrides: fleet.Overrides{Listen: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := f.WaitCaughtUp(ctx, env.End); err != nil {
		t.Fatal(err)
	}
	st, err := f.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	for _, ln := range env.Config.Lanes() {
		want += uint64(len(rec.Events(ln.Svc.Tag)))
	}
	if st.Events() != want || want == 0 {
		t.Errorf("status counts %d events delivered, the output received %d", st.Events(), want)
	}
	if err := f.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-f.Done():
	default:
		t.Fatal("Done is open after Stop returned")
	}
	// A wait on a stopped fleet ends with an error instead of waiting for its deadline.
	if err := f.WaitFor(ctx, func(*status.Status) bool { return false }); err == nil {
		t.Fatal("WaitFor on a stopped fleet returned nil")
	}
}

// TestStartFailsBeforeAnyRole: an output that cannot be opened stops the fleet before it
// connects, and Start returns that error instead of a running fleet.
func TestStartFailsBeforeAnyRole(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	env.File.Outputs = map[string]fleet.FileOutput{"devo_1": {Type: config.OutputDevoPlatform, Config: fleet.FileOutputConfig{
		Address: "127.0.0.1", Port: 1, Chain: env.Dir + "/missing-chain.crt", Cert: env.Dir + "/missing.crt", Key: env.Dir + "/missing.key"}}}
	env.Reload(t)
	f, err := fleet.Start(context.Background(), fleet.Fleet{Config: env.Config, Roles: fleet.AllRoles, Overrides: fleet.Overrides{Listen: "none"}})
	if err == nil {
		_ = f.Stop()
		t.Fatal("the fleet started with output files that do not exist")
	}
	if !strings.Contains(err.Error(), "devo_1") {
		t.Errorf("the error does not name the output: %v", err)
	}
}

// TestConnectSingleRoleNeedsAListener: a single role with an embedded configuration joins a
// `dtfleet run` through its listener, so nats.listen none is refused before connecting.
func TestConnectSingleRoleNeedsAListener(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	_, err := fleet.Connect(context.Background(), env.Config, fleet.Roles{Worker: true}, "", fleettest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "nats.url") {
		t.Fatalf("Connect = %v, want an error asking for nats.url", err)
	}
}

// TestFileIsValidated: a File goes through the validation a user's file gets.
func TestFileIsValidated(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	in := env.File.Inputs["darktrace"]
	in.Services = map[string]fleet.FileService{"modelbreach": {}}
	env.File.Inputs["darktrace"] = in
	_, err := env.File.Load(env.Dir + "/bad.yaml")
	var es config.Errors
	if !errors.As(err, &es) || !strings.Contains(err.Error(), "modelbreach") {
		t.Fatalf("Load = %v, want config.Errors naming the unknown service", err)
	}
}

func TestFleetRestartMidBackfill(t *testing.T) {
	env := fleettest.NewEnv(t, 5)
	rec := fleettest.NewRecorder()
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config, Deps: fleet.Dependencies{Outputs: []devo.Output{rec}}})
	fleettest.WaitFor(t, f.Bus, env.Config, time.Minute, "200 model breaches", func(*status.Status) bool { return len(rec.Events(breachTag)) >= 200 })
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	mid := len(rec.Events(breachTag))
	f = fleettest.Start(t, fleet.Fleet{Config: env.Config, Deps: fleet.Dependencies{Outputs: []devo.Output{rec}}})
	fleettest.WaitCaughtUp(t, f.Bus, env.Config, env.End, 3*time.Minute)
	t.Logf("stopped after %d breaches, restarted", mid)
	fleettest.CheckExactlyOnce(t, env.Fake, env.Config, rec.Events)
}

func TestFleetDeliveryFailuresRetried(t *testing.T) {
	env := fleettest.NewEnv(t, 2)
	var failAt []int
	for i := 1; i < 40; i += 3 {
		failAt = append(failAt, i)
	}
	rec := fleettest.NewRecorder(failAt...)
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config, Deps: fleet.Dependencies{Outputs: []devo.Output{rec}}})
	fleettest.WaitCaughtUp(t, f.Bus, env.Config, env.End, 3*time.Minute)
	fleettest.CheckExactlyOnce(t, env.Fake, env.Config, rec.Events)
}

func TestFleetFailedSlotRecordedAndReplayed(t *testing.T) {
	env := fleettest.NewEnv(t, 2)
	// The fake's data is generated per clock hour, so pick the first hour that holds incident
	// events (at about two an hour, some hours hold none).
	bad := env.Start.Add(5 * time.Hour)
	for len(env.Fake.AllEvents(config.ServiceIncidentEvents, bad, bad.Add(time.Hour))) == 0 {
		if bad = bad.Add(time.Hour); !bad.Before(env.End) {
			t.Fatal("the fake holds no incident events")
		}
	}
	env.Fake.SetInputError(config.ServiceIncidentEvents, bad, bad.Add(time.Hour), true)
	rec := fleettest.NewRecorder()
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config, Deps: fleet.Dependencies{Outputs: []devo.Output{rec}}})
	b := f.Bus
	// The failed slot does not block the lane: it catches up to the end.
	fleettest.WaitCaughtUp(t, b, env.Config, env.End, 3*time.Minute)
	st, err := f.Status(context.Background())
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
	status.Print(&buf, st)
	if !strings.Contains(buf.String(), "failed slots (retried automatically when a next retry is shown; dtfleet replay replays one now): 1") ||
		!strings.Contains(buf.String(), "next retry") {
		t.Errorf("status output does not show the failed slot:\n%s", buf.String())
	}
	lost := len(env.Fake.AllEvents(config.ServiceIncidentEvents, bad, bad.Add(time.Hour)))
	if lost == 0 {
		t.Fatal("the failed window holds no events; the test proves nothing")
	}
	pre := rec.Events("edr.darktrace.respond.incident_event")
	got := len(pre)
	var last int64
	for i, raw := range pre {
		if ts := fleettest.EventTime(t, config.ServiceIncidentEvents, raw); ts < last {
			t.Fatalf("before the replay, incident event %d at %d was delivered after one at %d", i, ts, last)
		} else {
			last = ts
		}
	}
	// The next slot's look-back (15 minutes) already recovers the end of the failed window.
	if all := len(env.Fake.Keys(config.ServiceIncidentEvents)); got < all-lost || got >= all {
		t.Fatalf("before the replay %d incident events were delivered, want from %d to %d", got, all-lost, all-1)
	}
	// The fault goes away; a replay of the window recovers it and clears the record.
	env.Fake.SetInputError(config.ServiceIncidentEvents, bad, bad.Add(time.Hour), false)
	ln := fleettest.LaneOf(t, env.Config, config.ServiceIncidentEvents)
	if _, err := coordinator.Replay(context.Background(), b, b.JS, ln, bad, bad.Add(time.Hour), coordinator.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	fleettest.WaitFor(t, b, env.Config, time.Minute, "the replay to clear the failure record", func(st *status.Status) bool { return len(st.Failed) == 0 })
	// The replayed window arrives after the slots that follow it, so order is checked above.
	fleettest.CheckDelivered(t, env.Fake, env.Config, rec.Events, map[string]bool{config.ServiceIncidentEvents: true})
}

func TestFleetReplayForceAndDedupe(t *testing.T) {
	env := fleettest.NewEnv(t, 2)
	rec := fleettest.NewRecorder()
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config, Deps: fleet.Dependencies{Outputs: []devo.Output{rec}}})
	b := f.Bus
	fleettest.WaitCaughtUp(t, b, env.Config, env.End, 3*time.Minute)
	before := len(rec.Events(breachTag))
	ln := fleettest.LaneOf(t, env.Config, config.ServiceModelBreaches)
	from, to := env.Start.Add(10*time.Hour), env.Start.Add(14*time.Hour)
	// Breaches are fetched by creation time: the replay re-delivers those of the range created
	// before its end (one created later is the next slot's).
	want := 0
	for _, at := range env.Fake.VisibleAt(config.ServiceModelBreaches, from, to) {
		if at.Before(to) {
			want++
		}
	}
	if want == 0 {
		t.Fatal("empty replay range")
	}
	waitSeq := func(seq uint64) {
		t.Helper()
		fleettest.WaitFor(t, b, env.Config, time.Minute, "the replayed slots", func(st *status.Status) bool {
			for _, l := range st.Lanes {
				if l.Service == ln.Service {
					return l.DeliveredSeq >= seq
				}
			}
			return false
		})
	}
	// Without --force: nothing is added.
	items, err := coordinator.Replay(context.Background(), b, b.JS, ln, from, to, coordinator.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitSeq(items[len(items)-1].Seq)
	if n := len(rec.Events(breachTag)); n != before {
		t.Fatalf("replay without --force added %d events", n-before)
	}
	// With --force: the range is delivered again (with its look-back, as a fetch would).
	items, err = coordinator.Replay(context.Background(), b, b.JS, ln, from, to, coordinator.ReplayOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	waitSeq(items[len(items)-1].Seq)
	added := rec.Events(breachTag)[before:]
	inRange := 0
	for _, raw := range added {
		if ts := fleettest.EventTime(t, config.ServiceModelBreaches, raw); ts >= from.UnixMilli() && ts < to.UnixMilli() {
			inRange++
		}
	}
	if inRange != want {
		t.Fatalf("replay --force re-delivered %d events of the range, want %d", inRange, want)
	}
}

// TestFileHidesTheToken: a File printed with %+v shows no private token; its YAML has it.
func TestFileHidesTheToken(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	token := env.File.Inputs["darktrace"].Credentials.PrivateToken
	if printed := fmt.Sprintf("%+v %v", env.File, env.File); strings.Contains(printed, token) {
		t.Errorf("the private token is printed: %s", printed)
	}
	y, err := env.File.Marshal()
	if err != nil || !strings.Contains(string(y), token) {
		t.Errorf("the YAML lacks the private token: %v\n%s", err, y)
	}
}
