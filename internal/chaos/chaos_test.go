package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// maxBatchEvents is the shipper's default batch cap (shipper.Options.BatchEvents, which the
// configuration does not change): a resend after a fault repeats at most one batch.
const maxBatchEvents = 20000

// profile is one way to run the suite.
type profile struct {
	name string
	// days of history the backfill covers, and the slot length of the windowed services.
	days   int
	window time.Duration
	// chaos is how long faults are injected, one every gap, cycling through the fault kinds.
	chaos, gap time.Duration
	// devoStall is how long the fake Devo stops reading; above the senders' 30 s timeout it
	// makes the batch fail and be resent.
	devoStall time.Duration
	// catchUp bounds the wait for the fleet to deliver up to the end of the chaos phase.
	catchUp time.Duration
}

// profileFor returns the long profile when DTFLEET_CHAOS_LONG holds a duration, else the short
// one.
func profileFor(t *testing.T) profile {
	short := profile{name: "short", days: 3, window: 5 * time.Minute, chaos: 110 * time.Second, gap: 8 * time.Second,
		devoStall: 5 * time.Second, catchUp: 4 * time.Minute}
	v := os.Getenv("DTFLEET_CHAOS_LONG")
	if v == "" {
		return short
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("DTFLEET_CHAOS_LONG=%q: want a positive duration such as 30m", v)
	}
	return profile{name: "long " + v, days: 7, window: 5 * time.Minute, chaos: d, gap: 20 * time.Second,
		devoStall: 40 * time.Second, catchUp: 15 * time.Minute}
}

// faultKinds are the kinds the schedule cycles through, in this order.
var faultKinds = []string{
	"appliance 5xx", "SIGKILL worker", "worker clock skew", "appliance 429", "Devo connection reset", "SIGKILL coordinator (leader)",
	"appliance stall", "kill NATS node leading DTF_RESULTS", "appliance truncated body", "Devo early close",
	"SIGKILL shipper (leader)", "appliance connection reset", "Devo stall",
}

// suite is one run: the processes, the fakes and the figures.
type suite struct {
	t       *testing.T
	p       profile
	dir     string
	fake    *darktracetest.Handler
	devo    *devotest.Server
	cl      *cluster
	js      jetstream.JetStream
	b       *bus.Bus
	cfg     *config.Config
	cfgPath string
	start   time.Time

	coordinators, workers, shippers []*member
	roundRobin                      int

	injected  map[string]int
	scheduled map[string]int
	// appliance faults added by the last injection, not yet known to have fired.
	pendingKind  string
	pendingAdded int
	devoResets   int
	devoCloses   int
}

// TestChaos runs the fleet as OS processes on a 3-node NATS cluster and injects faults of
// every kind on a schedule during a backfill and live polling; then it checks that nothing of
// the ground truth was lost, that duplicates stay within the batches the faults could leave in
// flight, and the order per lane, and prints the figures.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos suite runs a NATS cluster and seven dtfleet processes")
	}
	p := profileFor(t)
	dtfleet, natsServer := buildBinaries(t)
	t.Logf("profile %s: %d days of backfill in %v slots, faults for %v (one every %v); binaries built in %v",
		p.name, p.days, p.window, p.chaos, p.gap, binaries.buildPeriod.Round(time.Second))
	// DTFLEET_CHAOS_DIR keeps the processes' logs, configurations and stores there for a
	// post-mortem. By default they are in a temporary directory that is removed when the suite
	// passes and kept (its path logged) when it fails: an intermittent failure in CI leaves its
	// evidence.
	dir := os.Getenv("DTFLEET_CHAOS_DIR")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "dtfleet-chaos-run-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("the processes' logs, configuration and stores are kept in %s", dir)
				return
			}
			_ = os.RemoveAll(dir)
		})
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s := &suite{t: t, p: p, dir: dir, injected: map[string]int{}, scheduled: map[string]int{}}

	// The fake appliance has data from the backfill's start until a day ahead: what becomes
	// visible while the suite runs is polled live.
	now := time.Now().UTC()
	s.start = now.Truncate(time.Hour).Add(-time.Duration(p.days) * 24 * time.Hour)
	s.fake = darktracetest.NewHandler(darktracetest.Options{Seed: 11, Start: s.start, End: now.Add(24 * time.Hour),
		EventSize: 800, Latency: 5 * time.Millisecond, Jitter: 5 * time.Millisecond})
	appliance := httptest.NewServer(s.fake)
	t.Cleanup(func() {
		s.fake.Close()
		appliance.CloseClientConnections()
		appliance.Close()
	})
	var err error
	s.devo, err = devotest.NewServer(devotest.Options{RelayAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.devo.Close(); err != nil {
			t.Errorf("closing the fake Devo: %v", err)
		}
	})

	s.cl = startCluster(t, s.dir, natsServer)
	nc := s.cl.connect(t)
	t.Cleanup(nc.Close)
	if s.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	s.writeConfig(appliance.URL)
	s.startRoles(dtfleet)
	s.b, err = bus.Connect(context.Background(), config.NATS{URL: strings.Join(s.cl.urls, ",")}, bus.Options{Name: "dtfleet-chaos-status"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.b.Close)

	began := time.Now()
	backfilled := s.runSchedule()
	s.settle()
	if t.Failed() {
		return
	}
	caughtUpBy := s.catchUp()
	s.stopAll()
	if t.Failed() {
		return
	}
	s.report(caughtUpBy, backfilled, time.Since(began))
}

// writeConfig writes the one configuration every role process reads.
func (s *suite) writeConfig(applianceURL string) {
	t := s.t
	st := s.start.Format(time.RFC3339)
	w := int(s.p.window / time.Minute)
	_, port, _ := strings.Cut(s.devo.RelayAddr(), ":")
	y := fmt.Sprintf(`
globals: {id: chaos, name: dtfleet-chaos}
nats: {url: %q, replicas: 3}
workers: {concurrency: 8}
coordinator: {safety_lag_in_seconds: 2, lease_ttl_in_seconds: 3}
shipper: {lease_ttl_in_seconds: 3}
outputs:
  relay_1: {type: relay, config: {address: 127.0.0.1, port: %s}}
inputs:
  darktrace:
    requests_per_second: 500
    credentials: {public_token: %s, private_token: %s, instance: %s}
    services:
      modelbreaches: {start_time_in_utc_format: %q, override_time_window_interval_in_minutes: %d}
      aianalyst_incidentevents: {start_time_in_utc_format: %q, override_time_window_interval_in_minutes: %d}
      antigena: {start_time_in_utc_format: %q, override_time_window_interval_in_minutes: %d}
      status: {request_period_in_seconds: 10}
      summarystatistics: {request_period_in_seconds: 10}
`, strings.Join(s.cl.urls, ","), port, darktracetest.DefaultPublicToken, darktracetest.DefaultPrivateToken,
		applianceURL, st, w, st, w, st, w)
	s.cfgPath = filepath.Join(s.dir, "config.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.cfg = cfg
}

// startRoles starts every role process at once, as docker compose up or a Kubernetes rollout
// does on a fresh cluster (issue 9, row 10: each used to exit while the cluster was still
// placing the streams' replicas), then waits until a coordinator leads, a shipper leads every
// lane and every worker started.
func (s *suite) startRoles(dtfleet string) {
	t := s.t
	role := func(name, cmd string) *member {
		m := &member{name: name, bin: dtfleet, args: []string{"--log-format", "json", cmd, "-c", s.cfgPath}, dir: s.dir, t: t}
		m.start()
		return m
	}
	s.coordinators = []*member{role("coordinator-a", "coordinator"), role("coordinator-b", "coordinator")}
	s.workers = []*member{role("worker-a", "worker"), role("worker-b", "worker"), role("worker-c", "worker")}
	s.shippers = []*member{role("shipper-a", "shipper"), role("shipper-b", "shipper")}
	anyLogged := func(ms []*member, parts ...string) bool {
		for _, m := range ms {
			if m.cur.logged(parts...) > 0 {
				return true
			}
		}
		return false
	}
	exited := func() *member {
		for _, m := range slices.Concat(s.coordinators, s.workers, s.shippers) {
			if m.cur.exited() {
				return m
			}
		}
		return nil
	}
	ready := func() bool {
		if exited() != nil || !anyLogged(s.coordinators, `"msg":"coordinator lease acquired; planning"`) {
			return exited() != nil
		}
		for _, ln := range s.cfg.Lanes() {
			if !anyLogged(s.shippers, `"msg":"shipper lease acquired; delivering"`, `"service":"`+ln.Service+`"`) {
				return false
			}
		}
		for _, w := range s.workers {
			if w.cur.logged(`"msg":"worker started"`) == 0 {
				return false
			}
		}
		return true
	}
	if err := pollUntil(3*time.Minute, ready, nil); err != nil {
		t.Fatalf("the fleet started at once did not come up: %v", err)
	}
	if m := exited(); m != nil {
		t.Fatalf("%s exited while the fleet started at once (exit: %v):\n%s", m.cur.name, m.cur.err, m.cur.tail(3000))
	}
}

func (s *suite) members() []*member {
	return slices.Concat(s.coordinators, s.workers, s.shippers, s.cl.nodes)
}

// supervise restarts every role process that exited.
func (s *suite) supervise() {
	for _, m := range s.members() {
		m.supervise()
	}
}

// status reads the fleet's state, or returns nil when it cannot be read right now (a NATS node
// being elected, for example).
func (s *suite) status() *status.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := status.Read(ctx, s.b, s.cfg, time.Now())
	if err != nil {
		return nil
	}
	return st
}

// runSchedule injects one fault every gap, cycling through faultKinds, for the chaos phase,
// supervising the processes in between. It returns how long after its start every lane had
// delivered the backfill (zero if that happened only after the phase).
func (s *suite) runSchedule() (backfilled time.Duration) {
	began := time.Now()
	backfillEnd := time.Now().UTC().Add(-s.p.window).Truncate(s.p.window)
	next := began.Add(2 * time.Second) // the first fault hits the backfill early
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastStatus := time.Time{}
	for i := 0; time.Since(began) < s.p.chaos; <-tick.C {
		s.supervise()
		if backfilled == 0 && time.Since(lastStatus) > 2*time.Second {
			lastStatus = time.Now()
			if st := s.status(); st != nil && st.CaughtUp(backfillEnd) {
				backfilled = time.Since(began)
				s.t.Logf("backfill delivered after %v; live polling from now on", backfilled.Round(time.Second))
			}
		}
		if time.Now().Before(next) {
			continue
		}
		kind := faultKinds[i%len(faultKinds)]
		i++
		next = time.Now().Add(s.p.gap)
		s.scheduled[kind]++
		if err := s.inject(kind); err != nil {
			s.t.Errorf("injecting %s: %v", kind, err)
			return backfilled
		}
		s.t.Logf("%5.1fs injected %s", time.Since(began).Seconds(), kind)
	}
	return backfilled
}

// inject injects one fault of kind.
func (s *suite) inject(kind string) error {
	s.settleAppliance()
	switch kind {
	case "appliance 5xx":
		return s.applianceFaults(kind, 3, darktracetest.Fault{Kind: darktracetest.FaultStatus, Status: 502})
	case "appliance 429":
		return s.applianceFaults(kind, 3, darktracetest.Fault{Kind: darktracetest.FaultRateLimit, RetryAfter: time.Second})
	case "appliance stall":
		return s.applianceFaults(kind, 2, darktracetest.Fault{Kind: darktracetest.FaultStall, Stall: 3 * time.Second, AfterEvents: 1})
	case "appliance truncated body":
		return s.applianceFaults(kind, 2, darktracetest.Fault{Kind: darktracetest.FaultTruncate, AfterEvents: 2})
	case "appliance connection reset":
		return s.applianceFaults(kind, 2, darktracetest.Fault{Kind: darktracetest.FaultReset, AfterEvents: 1})
	case "Devo connection reset":
		s.devo.ResetAfter(20)
		return nil
	case "Devo early close":
		s.devo.CloseAfter(20)
		return nil
	case "Devo stall":
		s.devo.Stall(s.p.devoStall)
		s.injected[kind]++
		return nil
	case "SIGKILL worker":
		w := s.workers[s.roundRobin%len(s.workers)]
		s.roundRobin++
		w.env = nil // a skewed worker comes back on the host's clock
		return s.kill(kind, w)
	case "worker clock skew":
		return s.skewWorkers(kind)
	case "SIGKILL coordinator (leader)":
		return s.kill(kind, s.leader(s.coordinators, `"msg":"coordinator lease acquired; planning"`))
	case "SIGKILL shipper (leader)":
		return s.kill(kind, s.leader(s.shippers, `"msg":"shipper lease acquired; delivering"`))
	case "kill NATS node leading DTF_RESULTS":
		return s.killResultsLeader(kind)
	}
	return fmt.Errorf("unknown fault kind %q", kind)
}

// workerSkews are the clock offsets a "worker clock skew" injection gives two workers, through
// the binary's DTFLEET_DEBUG_CLOCK_OFFSET test knob: an hour ahead (beyond the appliance's ±30
// minute DTAPI-Date check: every request of that worker fails with API DATE ERROR, so its slots
// must be retried by the others, never lost, and its clock must not hold the fleet's rate limiter
// or planning back), and ten minutes behind (accepted by the appliance: its clock observations
// must not make the coordinator plan windows the appliance has not lived yet).
var workerSkews = []string{"1h", "-10m"}

// skewWorkers restarts two workers, one per offset of workerSkews, with their clocks shifted
// (the workers the round-robin of "SIGKILL worker" reaches last, so the skew lasts). A skewed
// worker keeps its skew until the suite kills it again.
func (s *suite) skewWorkers(kind string) error {
	for i, off := range workerSkews {
		w := s.workers[(s.roundRobin+len(s.workers)-1-i)%len(s.workers)]
		if err := w.cur.signal(syscall.SIGKILL, 30*time.Second); err != nil {
			return err
		}
		w.kills++
		w.env = []string{"DTFLEET_DEBUG_CLOCK_OFFSET=" + off}
		w.start()
		s.injected[kind]++
		s.t.Logf("%s restarted with its clock shifted by %s", w.cur.name, off)
	}
	return nil
}

// applianceFaults scripts n one-shot faults like f on the fake appliance.
func (s *suite) applianceFaults(kind string, n int, f darktracetest.Fault) error {
	for range n {
		s.fake.AddFault(f)
	}
	s.pendingKind, s.pendingAdded = kind, n
	return nil
}

// settleAppliance counts the appliance faults of the last injection that fired and drops the
// others, so that each injection is counted by kind.
func (s *suite) settleAppliance() {
	if s.pendingKind != "" {
		s.injected[s.pendingKind] += s.pendingAdded - s.fake.PendingFaults()
		s.fake.ClearFaults()
		s.pendingKind, s.pendingAdded = "", 0
	}
}

// leader returns the member whose current process logged that it leads (the one that logged
// it most for shippers, which lead per lane), or the first one.
func (s *suite) leader(ms []*member, msg string) *member {
	best, n := ms[0], 0
	for _, m := range ms {
		if c := m.cur.logged(msg); !m.cur.exited() && c > n {
			best, n = m, c
		}
	}
	return best
}

func (s *suite) kill(kind string, m *member) error {
	if err := m.kill(); err != nil {
		return err
	}
	s.injected[kind]++
	return nil
}

// killResultsLeader kills the NATS node that leads the results stream, waits until another node
// leads it, and starts the node again on its store.
func (s *suite) killResultsLeader(kind string) error {
	var name string
	if err := pollUntil(30*time.Second, func() bool { name = resultsLeader(s.js); return name != "" }, s.supervise); err != nil {
		return fmt.Errorf("finding the leader of the results stream: %w", err)
	}
	n := s.cl.node(name)
	if n == nil {
		return fmt.Errorf("the results stream's leader %q is not a node of the cluster", name)
	}
	if err := n.cur.signal(syscall.SIGKILL, 30*time.Second); err != nil {
		return err
	}
	n.kills++
	s.injected[kind]++
	err := pollUntil(60*time.Second, func() bool { l := resultsLeader(s.js); return l != "" && l != name }, s.supervise)
	if err != nil {
		return fmt.Errorf("no new leader of the results stream after %s was killed: %w", name, err)
	}
	n.start()
	return nil
}

// settle ends the chaos phase: the last appliance faults are counted and cleared, Devo reads
// again and the faults it still had armed are disarmed.
func (s *suite) settle() {
	s.settleAppliance()
	s.devo.Stall(0)
	s.devo.ResetAfter(0)
	s.devo.CloseAfter(0)
	s.injected["Devo connection reset"] = s.devo.Resets()
	s.injected["Devo early close"] = s.devo.EarlyCloses()
}

// catchUp waits until every windowed lane delivered up to the last slot that ended before the
// chaos phase did (and every snapshot lane once), restarting processes as needed. It returns
// that point.
func (s *suite) catchUp() time.Time {
	until := time.Now().UTC().Truncate(s.p.window)
	err := pollUntil(s.p.catchUp, func() bool {
		st := s.status()
		return st != nil && st.CaughtUp(until)
	}, s.supervise)
	if err != nil {
		st := s.status()
		b, _ := json.MarshalIndent(st, "", "  ")
		s.t.Errorf("the fleet did not deliver up to %v after the faults stopped: %v\nstatus: %s", until, err, b)
		s.dumpLogs()
	}
	return until
}

// stopAll stops every role gracefully (coordinators and workers first, shippers last) so that
// the delivery checkpoints are final.
func (s *suite) stopAll() {
	for _, m := range slices.Concat(s.coordinators, s.workers, s.shippers) {
		if err := m.cur.signal(syscall.SIGTERM, 90*time.Second); err != nil {
			s.t.Errorf("stopping %s: %v", m.name, err)
		}
	}
}

// dumpLogs prints the tail of each current process's log.
func (s *suite) dumpLogs() {
	for _, m := range s.members() {
		s.t.Logf("log of %s, last 4000 bytes:\n%s", m.cur.name, m.cur.tail(4000))
	}
}

// laneFigures are the end-of-run figures of one lane.
type laneFigures struct {
	service               string
	expected, delivered   int
	missing, duplicated   int
	resends, longest      int
	lateFinds, disordered int
	foreign               int
	snapshot              bool
}

// report checks what the fake Devo received against the ground truth and prints the tables.
func (s *suite) report(caughtUpBy time.Time, backfilled, took time.Duration) {
	t := s.t
	var st *status.Status
	waitUntil(t, time.Minute, "the fleet's status", func() bool { st = s.status(); return st != nil })
	// A slot recorded as failed is passed over, visibly, until it is replayed: its events count
	// as missing here, and the records say why (an expired result, a corrupt chunk, an error
	// that persisted), which tells a recorded failure from a hole.
	for i, f := range st.Failed {
		if i == 10 {
			t.Logf("... and %d more failed slots", len(st.Failed)-i)
			break
		}
		t.Logf("failed slot %s.%s seq %d [%s, %s): %s", f.Input, f.Service, f.Seq, f.From.Format(time.RFC3339), f.To.Format(time.RFC3339), f.Error)
	}
	var figs []laneFigures
	for _, l := range st.Lanes {
		if l.Snapshot {
			figs = append(figs, s.checkSnapshots(l.Service))
			continue
		}
		figs = append(figs, s.checkLane(l.Service, l.DeliveredUntil))
	}

	// Every resend is one contiguous run of events delivered before. A run comes from a batch
	// in flight when a fault hit: a shipper killed (or exiting), a NATS node lost or Devo
	// stalled may each leave one batch per lane; a Devo reset or early close, one batch.
	shipperLosses := 0
	for _, m := range s.shippers {
		shipperLosses += m.kills + len(m.exits)
	}
	lanes := 0 // windowed lanes: resends are counted on them only
	for _, f := range figs {
		if !f.snapshot {
			lanes++
		}
	}
	bound := lanes*(shipperLosses+s.injected["kill NATS node leading DTF_RESULTS"]+s.injected["Devo stall"]) +
		s.injected["Devo connection reset"] + s.injected["Devo early close"]
	resends := 0
	for _, f := range figs {
		resends += f.resends
		if f.longest > maxBatchEvents {
			t.Errorf("%s: one resend repeated %d events, more than a batch (%d)", f.service, f.longest, maxBatchEvents)
		}
	}
	if resends > bound {
		t.Errorf("%d resends of already delivered events, more than the %d batches the faults could leave in flight", resends, bound)
	}

	var tb strings.Builder
	fmt.Fprintf(&tb, "dtfleet chaos suite, profile %s: %d days backfilled in %v slots, faults for %v, run %v; ",
		s.p.name, s.p.days, s.p.window, s.p.chaos, took.Round(time.Second))
	if backfilled > 0 {
		fmt.Fprintf(&tb, "backfill delivered %v into the fault phase, then live polling\n", backfilled.Round(time.Second))
	} else {
		fmt.Fprintf(&tb, "the backfill outlasted the fault phase\n")
	}
	fmt.Fprintf(&tb, "delivered up to %s; ground truth: every event the fake appliance made visible before each lane's delivery checkpoint\n\n",
		caughtUpBy.Format(time.RFC3339))
	w := tabwriter.NewWriter(&tb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "fault kind\tscheduled\tinjected\t")
	for _, k := range faultKinds {
		fmt.Fprintf(w, "%s\t%d\t%d\t\n", k, s.scheduled[k], s.injected[k])
	}
	exits := 0
	for _, m := range s.members() {
		exits += len(m.exits)
	}
	fmt.Fprintf(w, "role exits the suite did not cause\t-\t%d\t\n", exits)
	fmt.Fprintf(w, "slots recorded as failed at the end (status)\t-\t%d\t\n", len(st.Failed))
	fmt.Fprintf(w, "shipper deliveries failed and retried (observed)\t-\t%d\t\n", s.logged(s.shippers, `failed; retrying"`))
	fmt.Fprintf(w, "coordinator plannings failed and retried (observed)\t-\t%d\t\n", s.logged(s.coordinators, `"msg":"planning failed; retrying next tick"`))
	fmt.Fprintf(w, "worker requests refused for their date, API DATE ERROR (observed)\t-\t%d\t\n", s.logged(s.workers, `API DATE ERROR`))
	_ = w.Flush()
	tb.WriteString("\n")
	w = tabwriter.NewWriter(&tb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "lane\texpected\tdelivered\tmissing\tduplicated\tresends\tlongest resend\tlate finds\tout of order\t")
	var sum laneFigures
	for _, f := range figs {
		if f.snapshot {
			fmt.Fprintf(w, "%s (snapshots)\t-\t%d\t-\t-\t-\t-\t-\t-\t\n", f.service, f.delivered)
			continue
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n", f.service, f.expected, f.delivered, f.missing, f.duplicated,
			f.resends, f.longest, f.lateFinds, f.disordered)
		sum.expected += f.expected
		sum.delivered += f.delivered
		sum.missing += f.missing
		sum.duplicated += f.duplicated
		sum.resends += f.resends
		sum.disordered += f.disordered
	}
	fmt.Fprintf(w, "total (windowed)\t%d\t%d\t%d\t%d\t%d\t\t\t%d\t\n", sum.expected, sum.delivered, sum.missing, sum.duplicated, sum.resends, sum.disordered)
	_ = w.Flush()
	fmt.Fprintf(&tb, "\nresends allowed: %d (a batch per windowed lane for each shipper killed or exited, NATS node lost and Devo stall; one per Devo reset or early close)\n", bound)
	for _, m := range s.members() {
		for _, e := range m.exits {
			fmt.Fprintf(&tb, "\nUNEXPECTED EXIT: %s\n", e)
		}
	}
	t.Log("\n" + tb.String())
	out := os.Getenv("DTFLEET_CHAOS_REPORT")
	if out == "" {
		out = filepath.Join(os.TempDir(), "dtfleet-chaos-report.txt")
	}
	if err := os.WriteFile(out, []byte(tb.String()), 0o644); err != nil {
		t.Errorf("writing the report: %v", err)
	} else {
		t.Logf("report written to %s", out)
	}
}

// logged counts the log lines of every incarnation of ms that contain parts.
func (s *suite) logged(ms []*member, parts ...string) int {
	n := 0
	for _, m := range ms {
		n += m.logged(parts...)
	}
	return n
}

// checkSnapshots counts a snapshot lane's deliveries: at least one. Snapshots have no ground
// truth and no key (two polls may return the same text), so neither missing events nor
// duplicates are counted for them.
func (s *suite) checkSnapshots(service string) laneFigures {
	f := laneFigures{service: service, snapshot: true, delivered: s.devo.CountTag(s.tagOf(service))}
	if f.delivered == 0 {
		s.t.Errorf("%s: no snapshot delivered", service)
	}
	return f
}

func (s *suite) tagOf(service string) string {
	return fleettest.LaneOf(s.t, s.cfg, service).Svc.Tag
}

// checkLane compares what Devo received for a windowed lane with the ground truth up to its
// delivery checkpoint, counts duplicates and resends, and checks the order: slots in sequence
// and events in event-time order inside a slot. One event may come after a later one: a breach
// the appliance created after its own slot was fetched, found by a later slot's look-back.
func (s *suite) checkLane(service string, until time.Time) laneFigures {
	t := s.t
	f := laneFigures{service: service}
	due := s.fake.Due(service, s.start, until, until)
	visibleNow := map[string]bool{}
	for _, e := range s.fake.Due(service, s.start, time.Now().Add(24*time.Hour), time.Now()) {
		visibleNow[e.Key] = true
	}
	f.expected = len(due)
	count := map[string]int{}
	var maxTime int64
	inRun := false
	run := 0
	windowMs := s.p.window.Milliseconds()
	startMs := s.start.UnixMilli()
	for _, r := range s.devo.Events(s.tagOf(service)) {
		raw := []byte(r.Msg)
		k := darktracetest.TruthKey(service, raw)
		f.delivered++
		count[k]++
		if count[k] > 1 {
			f.duplicated++
			if !inRun {
				f.resends++
				inRun, run = true, 0
			}
			run++
			f.longest = max(f.longest, run)
			continue
		}
		inRun = false
		if !visibleNow[k] {
			f.foreign++
			continue
		}
		ts := fleettest.EventTime(t, service, raw)
		if ts >= maxTime {
			maxTime = ts
			continue
		}
		if service == config.ServiceModelBreaches {
			var b struct {
				CreationTime int64 `json:"creationTime"`
			}
			slotEnd := startMs + ((ts-startMs)/windowMs+1)*windowMs
			if json.Unmarshal(raw, &b) == nil && b.CreationTime >= slotEnd {
				f.lateFinds++
				continue
			}
		}
		f.disordered++
		if f.disordered <= 3 {
			t.Errorf("%s: event %s (time %d) delivered after one at %d", service, k, ts, maxTime)
		}
	}
	for _, e := range due {
		if count[e.Key] == 0 {
			f.missing++
			if f.missing <= 10 {
				t.Errorf("%s: event %s (time %v, visible at %v) never delivered", service, e.Key, e.Time, e.VisibleAt)
			}
		}
	}
	if f.missing > 0 {
		t.Errorf("%s: %d of %d events of the ground truth never delivered", service, f.missing, f.expected)
	}
	if f.foreign > 0 {
		t.Errorf("%s: %d delivered events are not in the fake appliance's data", service, f.foreign)
	}
	return f
}
