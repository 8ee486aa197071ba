package main

// Fleet-level tests of Devo delivery (issue 4): the in-process fleet delivers to the fake Devo
// (devotest) through outputs built from config YAML written the way a user writes it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// fastBackoff keeps the tests' retries quick; the product default starts at 1 s.
func fastBackoff() backoff.BackOff {
	return &backoff.ExponentialBackOff{InitialInterval: 5 * time.Millisecond, RandomizationFactor: 0.5, Multiplier: 2,
		MaxInterval: 100 * time.Millisecond}
}

// logCapture is a logger whose text output the test can search (and see with -v).
type logCapture struct {
	buf    logtest.Buffer
	logger *slog.Logger
}

func newLogCapture(t *testing.T) *logCapture {
	c := &logCapture{}
	var w io.Writer = &c.buf
	if testing.Verbose() {
		w = io.MultiWriter(&c.buf, os.Stderr)
	}
	c.logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return c
}

// count is the number of log lines containing every one of parts.
func (c *logCapture) count(parts ...string) int {
	n := 0
	for _, line := range strings.Split(c.buf.String(), "\n") {
		if line != "" && allIn(line, parts) {
			n++
		}
	}
	return n
}

func allIn(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// waitUntil polls cond until it holds, failing the test with what after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// launchFleet starts the whole fleet in-process (fleettest.StartErr) with fast delivery retries
// unless o says otherwise; it is stopped when the test ends.
func launchFleet(t *testing.T, cfg *config.Config, o fleet.Overrides, d fleet.Dependencies) (*fleet.Running, error) {
	t.Helper()
	if o.Backoff == nil {
		o.Backoff = fastBackoff
	}
	return fleettest.StartErr(t, fleet.Fleet{Config: cfg, Deps: d, Overrides: o})
}

// mustLaunchFleet is launchFleet for a fleet that must start.
func mustLaunchFleet(t *testing.T, cfg *config.Config, o fleet.Overrides, d fleet.Dependencies) *fleet.Running {
	t.Helper()
	f, err := launchFleet(t, cfg, o, d)
	if err != nil {
		t.Fatalf("starting the fleet: %v", err)
	}
	return f
}

// deliveryCursor reads a lane's delivery checkpoint from the bus (ok false: none yet).
func deliveryCursor(t *testing.T, b *bus.Bus, ln config.Lane) (d proto.Delivery, ok bool) {
	t.Helper()
	kv, err := b.KV(context.Background(), proto.BucketDelivered)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), proto.LaneKey(ln.Input, ln.Service))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return d, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Decode(e.Value(), &d); err != nil {
		t.Fatal(err)
	}
	return d, true
}

// storedCursor opens the (stopped) fleet's embedded store and reads a lane's delivery checkpoint.
func storedCursor(t *testing.T, cfg *config.Config, ln config.Lane) (proto.Delivery, bool) {
	t.Helper()
	b, err := fleet.Connect(context.Background(), cfg, fleet.AllRoles, "none", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	return deliveryCursor(t, b, ln)
}

// devoSetup is a fake appliance, a test PKI and a config directory with certs/chain.crt,
// certs/domain.crt and certs/domain.key, as a user lays them out.
type devoSetup struct {
	fake       *darktracetest.Server
	start, end time.Time
	dir        string
	pki        *devotest.PKI
	chain      string
	cert, key  string
}

func newDevoSetup(t *testing.T, span time.Duration, perHour map[string]float64) *devoSetup {
	t.Helper()
	end := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	start := end.Add(-span)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 11, Start: start, End: end, EventSize: 300, EventsPerHour: perHour})
	t.Cleanup(fake.Close)
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	certs := filepath.Join(dir, "certs")
	for _, d := range []string{pkiDir, certs} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	p, err := devotest.NewPKI(pkiDir)
	if err != nil {
		t.Fatal(err)
	}
	s := &devoSetup{fake: fake, start: start, end: end, dir: dir, pki: p,
		chain: filepath.Join(certs, "chain.crt"), cert: filepath.Join(certs, "domain.crt"), key: filepath.Join(certs, "domain.key")}
	s.install(t, []string{p.CA}, p.ClientCert, p.ClientKey)
	return s
}

// install writes the chain file (the concatenation of chain), the cert and the key in place.
func (s *devoSetup) install(t *testing.T, chain []string, cert, key string) {
	t.Helper()
	var bundle []byte
	for _, c := range chain {
		bundle = append(bundle, mustReadFile(t, c)...)
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{s.chain, bundle}, {s.cert, mustReadFile(t, cert)}, {s.key, mustReadFile(t, key)}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// load writes config.yaml (the fleet settings, then outputs and services as given) into the setup's
// directory and loads it the way `dtfleet run -c config.yaml` does.
func (s *devoSetup) load(t *testing.T, outputs, services string, env map[string]string) (*config.Config, string) {
	t.Helper()
	y := fmt.Sprintf(`globals: {id: devo-test, name: dtfleet-devo-test}
nats: {store_dir: data, listen: none}
workers: {concurrency: 8}
coordinator: {safety_lag_in_seconds: 0, lease_ttl_in_seconds: 2}
shipper: {lease_ttl_in_seconds: 2, sender_stats_period_in_seconds: 1}
outputs:
%s
inputs:
  darktrace:
    requests_per_second: 1000
    credentials:
      public_token: %s
      private_token: ${DT_PRIVATE_TOKEN}
      instance: %s
    services:
%s`, outputs, darktracetest.DefaultPublicToken, s.fake.URL, strings.ReplaceAll(services, "START", s.start.Format(time.RFC3339)))
	path := filepath.Join(s.dir, "config.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"DT_PRIVATE_TOKEN": darktracetest.DefaultPrivateToken}
	for k, v := range env {
		vars[k] = v
	}
	cfg, err := config.Load(path, config.LoadOptions{LookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }})
	if err != nil {
		t.Fatalf("loading %s:\n%s\n%v", path, y, err)
	}
	return cfg, y
}

// tlsOutput is a devo_platform output block for the fake's TLS listener, with the relative cert
// paths of the setup's directory.
func tlsOutput(name, addr, extra string) string {
	host, port := splitAddr(addr)
	return fmt.Sprintf(`  %s:
    type: devo_platform
    config:
      address: %s
      port: %s
      chain: certs/chain.crt
      cert: certs/domain.crt
      key: certs/domain.key%s`, name, host, port, extra)
}

func splitAddr(addr string) (host, port string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// sinkMessages returns the messages the fake received with tag, keeping those keep accepts.
func sinkMessages(sink *devotest.Server, tag string, keep func(devotest.Received) bool) [][]byte {
	var out [][]byte
	for _, e := range sink.Events(tag) {
		if keep == nil || keep(e) {
			out = append(out, []byte(e.Msg))
		}
	}
	return out
}

// sendLog wraps an output and records, in order, the batches it confirmed and the events of the
// batches that failed.
type sendLog struct {
	devo.Output
	mu        sync.Mutex
	confirmed map[string][][]byte // tag → messages of confirmed batches, in order
	inFailed  map[string]int      // event key → failed Sends that carried it
	failed    int
	maxBatch  int
	service   map[string]string // tag → service, to key events
}

func (l *sendLog) Send(ctx context.Context, b *devo.Batch) error {
	err := l.Output.Send(ctx, b)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxBatch = max(l.maxBatch, len(b.Events))
	if err != nil {
		l.failed++
		for _, e := range b.Events {
			l.inFailed[darktracetest.Key(l.service[b.Tag], e.Msg)]++
		}
		return err
	}
	for _, e := range b.Events {
		l.confirmed[b.Tag] = append(l.confirmed[b.Tag], slices.Clone(e.Msg))
	}
	return nil
}

func (l *sendLog) confirmedOf(tag string) [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.confirmed[tag])
}

// TestFleetDevoTLSResets backfills half a day of model breaches over mutual TLS while the fake Devo
// resets the connection 100 times. Every event reaches Devo; the events confirmed by the
// half-close/EOF handshake are exactly the ground truth, once each and in order; and every
// duplicate Devo received is an event of a batch whose delivery failed (the batch in flight when
// its connection was reset), so duplicates are at least one per reset (the event that triggered
// it is resent) and at most resets × the largest batch.
func TestFleetDevoTLSResets(t *testing.T) {
	const (
		resets      = 100
		resetEvery  = 67 // events recorded between resets; above the largest batch, so every retry can pass
		batchEvents = 20 // shipper batches close at this size (plus the rest of their last chunk)
	)
	// Two-minute slots of about 20 breaches, with no look-back, keep batches small and the run short.
	s := newDevoSetup(t, 12*time.Hour, map[string]float64{config.ServiceModelBreaches: 600})
	sink, err := devotest.NewServer(devotest.Options{TLSAddr: "127.0.0.1:0", CertFile: s.pki.ServerCert, KeyFile: s.pki.ServerKey, ClientCAFile: s.pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	cfg, _ := s.load(t, tlsOutput("devo_1", sink.TLSAddr(), ""), `      modelbreaches: {start_time_in_utc_format: "START", override_time_window_interval_in_minutes: 2, look_back_in_minutes: 0}
`, nil)
	const service = config.ServiceModelBreaches
	tag := fleettest.LaneOf(t, cfg, service).Svc.Tag
	total := len(s.fake.Keys(service))
	if total < resets*resetEvery {
		t.Fatalf("the fake holds %d events, fewer than %d resets × %d: not every reset would happen", total, resets, resetEvery)
	}

	logs := newLogCapture(t)
	built, err := fleet.OpenOutputs(cfg, nil, logs.logger)
	if err != nil {
		t.Fatal(err)
	}
	out := &sendLog{Output: built[0], confirmed: map[string][][]byte{}, inFailed: map[string]int{}, service: map[string]string{tag: service}}
	t.Cleanup(func() { _ = out.Close() })
	sink.ResetEveryTimes(resetEvery, resets)
	f := mustLaunchFleet(t, cfg, fleet.Overrides{BatchEvents: batchEvents}, fleet.Dependencies{Logger: logs.logger, Outputs: []devo.Output{out}})
	b := f.Bus
	fleettest.WaitCaughtUp(t, b, cfg, s.end, 2*time.Minute)
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}

	if got := sink.Resets(); got != resets {
		t.Fatalf("the fake reset %d connections; want %d", got, resets)
	}
	// What the confirmations covered: the ground truth, once each, in order.
	fleettest.CheckExactlyOnce(t, s.fake, cfg, out.confirmedOf)
	// What Devo received: every event, plus duplicates only from failed batches.
	received := map[string]int{}
	for _, m := range sinkMessages(sink, tag, nil) {
		received[darktracetest.Key(service, m)]++
	}
	dups := 0
	for _, k := range s.fake.Keys(service) {
		n := received[k]
		if n == 0 {
			t.Errorf("event %s never reached the fake Devo", k)
			continue
		}
		if n-1 > out.inFailed[k] {
			t.Errorf("event %s reached the fake Devo %d times but was in only %d failed batches", k, n, out.inFailed[k])
		}
		dups += n - 1
		delete(received, k)
	}
	if len(received) > 0 {
		t.Errorf("the fake Devo received %d events that are not in the ground truth", len(received))
	}
	out.mu.Lock()
	failed, maxBatch := out.failed, out.maxBatch
	out.mu.Unlock()
	bound := resets * maxBatch
	t.Logf("%d resets over mutual TLS: %d duplicates of %d events (%d failed sends, largest batch %d, bound %d resets × %d)",
		resets, dups, total, failed, maxBatch, bound, maxBatch)
	if failed < resets {
		t.Errorf("%d sends failed, fewer than the %d resets", failed, resets)
	}
	if dups < resets || dups > bound {
		t.Errorf("%d duplicates; want between %d (one per reset) and %d (resets × largest batch)", dups, resets, bound)
	}
	if n := logs.count("delivering a batch failed; retrying", "devo_1"); n < resets {
		t.Errorf("%d retry warnings logged; want at least %d", n, resets)
	}
}

// TestFleetDevoCertificateErrors breaks the TLS files of a devo_platform output in four ways while
// a backfill is half delivered: a client certificate from another CA and an expired one stop the
// fleet at start with an error naming the cert file; a chain file that does not verify the server
// and a client certificate the server refuses fail every delivery with an error naming the file
// to fix. In every case the delivery cursor stays where it was and nothing reaches Devo. Fixing
// the files and restarting delivers the rest, each event exactly once.
func TestFleetDevoCertificateErrors(t *testing.T) {
	s := newDevoSetup(t, 12*time.Hour, map[string]float64{config.ServiceModelBreaches: 300})
	p := s.pki
	q, err := devotest.NewPKI(t.TempDir()) // an unrelated PKI: its CA signed nothing the fake trusts
	if err != nil {
		t.Fatal(err)
	}
	// The fake's server certificate is issued by the second CA and its client certificates by the
	// first, so the right chain file holds both (as Devo's holds a root and intermediates).
	sink, err := devotest.NewServer(devotest.Options{TLSAddr: "127.0.0.1:0", CertFile: p.ForeignServerCert, KeyFile: p.ForeignServerKey, ClientCAFile: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	goodChain := []string{p.CA, p.OtherCA}
	const services = `      modelbreaches: {start_time_in_utc_format: "START", override_time_window_interval_in_minutes: 10, look_back_in_minutes: 0}
`
	outputs := tlsOutput("devo_1", sink.TLSAddr(), "")
	load := func() (*config.Config, string) { return s.load(t, outputs, services, nil) }
	cfg, _ := load()
	ln := fleettest.LaneOf(t, cfg, config.ServiceModelBreaches)
	tag := ln.Svc.Tag

	// Deliver part of the backfill, then park the shipper on refused connections (so no batch is
	// half-sent when it stops) and stop.
	s.install(t, goodChain, p.ClientCert, p.ClientKey)
	logs := newLogCapture(t)
	f := mustLaunchFleet(t, cfg, fleet.Overrides{BatchEvents: 100}, fleet.Dependencies{Logger: logs.logger})
	b := f.Bus
	waitUntil(t, time.Minute, "part of the backfill to be delivered", func() bool {
		d, ok := deliveryCursor(t, b, ln)
		return ok && d.Events >= 500
	})
	sink.Refuse(true)
	refusedBefore := logs.count("delivering a batch failed; retrying")
	waitUntil(t, time.Minute, "a refused delivery", func() bool { return logs.count("delivering a batch failed; retrying") > refusedBefore })
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	sink.Refuse(false)
	before, ok := storedCursor(t, cfg, ln)
	if !ok || before.Events == 0 {
		t.Fatal("no delivery checkpoint after the first run")
	}
	received := sink.Count()
	if received >= len(s.fake.Keys(config.ServiceModelBreaches)) {
		t.Fatal("the first run delivered everything; the test proves nothing")
	}
	t.Logf("first run: %d of %d breaches delivered, cursor at slot %d", received, len(s.fake.Keys(config.ServiceModelBreaches)), before.Seq)

	cases := []struct {
		name        string
		chain       []string
		cert, key   string
		atStart     bool   // the fleet refuses to start (else every delivery fails)
		file        string // the file the error must name
		want        string // and what it must say
		notAccepted bool
	}{
		{"client certificate from another CA", goodChain, q.ClientCert, q.ClientKey, true, s.cert, "does not verify against the chain", true},
		{"expired client certificate", goodChain, p.ExpiredCert, p.ExpiredKey, true, s.cert, "certificate has expired", true},
		{"chain file that does not verify the server", []string{p.CA}, p.ClientCert, p.ClientKey, false, s.chain, "the server's certificate does not verify against the chain file", false},
		{"client certificate the server refuses", goodChain, p.OtherClientCert, p.OtherClientKey, false, s.cert, "the server rejected the client certificate", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s.install(t, tc.chain, tc.cert, tc.key)
			cfg, _ := load()
			logs := newLogCapture(t)
			accepted := sink.Accepted()
			f, err := launchFleet(t, cfg, fleet.Overrides{BatchEvents: 100}, fleet.Dependencies{Logger: logs.logger})
			if tc.atStart {
				if err == nil {
					_ = f.Stop()
					t.Fatal("the fleet started with a bad certificate")
				}
				if !strings.Contains(err.Error(), tc.file) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("the fleet stopped with %v; want an error naming %s that says %q", err, tc.file, tc.want)
				}
				t.Logf("start-up error: %v", err)
				if sink.Accepted() != accepted {
					t.Error("the fleet connected to Devo with files it should have refused")
				}
			} else {
				if err != nil {
					t.Fatalf("starting the fleet: %v", err)
				}
				b := f.Bus
				waitUntil(t, 30*time.Second, fmt.Sprintf("two failed deliveries naming %s", tc.file), func() bool {
					return logs.count("level=WARN", "delivering a batch failed", tc.want, tc.file) >= 2
				})
				if d, _ := deliveryCursor(t, b, ln); d.Seq != before.Seq || d.Events != before.Events {
					t.Errorf("the delivery cursor moved from slot %d (%d events) to slot %d (%d events)", before.Seq, before.Events, d.Seq, d.Events)
				}
				select {
				case <-f.Done():
					t.Fatalf("the fleet stopped: %v", f.Err())
				default:
				}
				if err := f.Stop(); err != nil {
					t.Fatal(err)
				}
				for _, line := range strings.Split(logs.buf.String(), "\n") {
					if strings.Contains(line, tc.want) {
						t.Logf("logged: %s", line)
						break
					}
				}
			}
			if d, _ := storedCursor(t, cfg, ln); d.Seq != before.Seq || d.Events != before.Events {
				t.Errorf("the delivery cursor moved from slot %d (%d events) to slot %d (%d events)", before.Seq, before.Events, d.Seq, d.Events)
			}
			if got := sink.Count(); got != received {
				t.Errorf("the fake Devo received %d events with bad files; it had %d", got-received, received)
			}
		})
	}

	// The files are fixed: a restart delivers the rest, nothing lost and nothing twice.
	s.install(t, goodChain, p.ClientCert, p.ClientKey)
	cfg, _ = load()
	f = mustLaunchFleet(t, cfg, fleet.Overrides{BatchEvents: 100}, fleet.Dependencies{Logger: logs.logger})
	b = f.Bus
	fleettest.WaitCaughtUp(t, b, cfg, s.end, time.Minute)
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	fleettest.CheckExactlyOnce(t, s.fake, cfg, func(string) [][]byte { return sinkMessages(sink, tag, nil) })
}

// syslogLine is the exact line form: <14>YYYY-MM-DD HH:MM:SS.mmm host tag: message.
var syslogLine = regexp.MustCompile(`^<14>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (\S+) (\S+): \{.*\}$`)

// parseLines parses the Devo lines of a file or console output, checking their exact form, and
// returns the messages per tag of the lines written with host.
func parseLines(t *testing.T, what, text, host string) map[string][][]byte {
	t.Helper()
	out := map[string][][]byte{}
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("%s: the output does not end with a complete line", what)
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		m := syslogLine.FindStringSubmatch(line)
		if m == nil || m[1] != host {
			t.Fatalf("%s: line %d is not a Devo line from %s: %.200q", what, i+1, host, line)
		}
		e, err := devotest.ParseLine([]byte(line + "\n"))
		if err != nil {
			t.Fatalf("%s: line %d: %v", what, i+1, err)
		}
		out[e.Tag] = append(out[e.Tag], []byte(e.Msg))
	}
	return out
}

// TestFleetDevoEveryOutputType runs one backfill into every output type at once, configured in
// YAML as the README describes them: devo_platform over mutual TLS (plain lines, and gzip members
// on a second output), relay over plain TCP, http in stream mode with a token, file and console.
// Each one gets every event exactly once and in order, under the override_devo_tag where one is
// set; each logs the sender statistics line of Devo's collector; and the http token appears in no
// log line.
func TestFleetDevoEveryOutputType(t *testing.T) {
	const httpToken = "0123456789abcdefABCDEF0123456789"
	s := newDevoSetup(t, 12*time.Hour, map[string]float64{config.ServiceModelBreaches: 60, config.ServiceIncidentEvents: 20})
	p := s.pki
	sink, err := devotest.NewServer(devotest.Options{
		TLSAddr: "127.0.0.1:0", CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientCAFile: p.CA,
		RelayAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", HTTPToken: httpToken,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	relayHost, relayPort := splitAddr(sink.RelayAddr())
	outputs := tlsOutput("devo_1", sink.TLSAddr(), "\n      hostname: tls-host") + "\n" +
		tlsOutput("devo_gz", sink.TLSAddr(), "\n      hostname: gz-host\n      gzip: true") + "\n" +
		fmt.Sprintf(`  relay_1:
    type: relay
    config: {address: %s, port: %s, hostname: relay-host}
  http_1:
    type: http
    config:
      url: %s
      domain: my_domain
      token: ${DEVO_HTTP_TOKEN}
      hostname: http-host
  file_1:
    type: file
    config: {path: out/devo.log, hostname: file-host}
  console_1:
    type: console
    config: {hostname: console-host}`, relayHost, relayPort, sink.HTTPURL())
	cfg, _ := s.load(t, outputs, `      modelbreaches: {start_time_in_utc_format: "START", look_back_in_minutes: 0, override_devo_tag: my.app.dt.breach}
      aianalyst_incidentevents: {start_time_in_utc_format: "START"}
      status: {}
`, map[string]string{"DEVO_HTTP_TOKEN": httpToken})
	if got := fleettest.LaneOf(t, cfg, config.ServiceModelBreaches).Svc.Tag; got != "my.app.dt.breach" {
		t.Fatalf("override_devo_tag not applied: the breach tag is %q", got)
	}

	logs := newLogCapture(t)
	console := &logtest.Buffer{}
	f := mustLaunchFleet(t, cfg, fleet.Overrides{}, fleet.Dependencies{Logger: logs.logger, Stdout: console})
	b := f.Bus
	fleettest.WaitCaughtUp(t, b, cfg, s.end, time.Minute)
	// Every output logs its statistics each sender_stats_period_in_seconds (1 s here).
	stats := regexp.MustCompile(`Standard - Total number of messages sent: [1-9]\d*, messages sent since \\?"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}\+00:00\\?": \d+ \(elapsed \d+\.\d{3} seconds\)`)
	names := []string{"devo_1", "devo_gz", "relay_1", "http_1", "file_1", "console_1"}
	waitUntil(t, 30*time.Second, "a statistics line from every output", func() bool {
		for _, name := range names {
			found := false
			for _, line := range strings.Split(logs.buf.String(), "\n") {
				if strings.Contains(line, "output="+name+" ") && stats.MatchString(line) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	})
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}

	for _, o := range []struct {
		name, listener, host, framing string
	}{
		{"devo_1", "tls", "tls-host", devotest.FramingLF},
		{"devo_gz", "tls", "gz-host", devotest.FramingGzip},
		{"relay_1", "relay", "relay-host", devotest.FramingLF},
		{"http_1", "http", "http-host", devotest.FramingStream},
	} {
		t.Run(o.name, func(t *testing.T) {
			keep := func(e devotest.Received) bool { return e.Listener == o.listener && e.Host == o.host }
			for _, e := range sink.All() {
				if keep(e) && (e.Framing != o.framing || (o.listener == "http" && e.Domain != "my_domain")) {
					t.Fatalf("an event arrived framed %q for domain %q; want %q", e.Framing, e.Domain, o.framing)
				}
			}
			fleettest.CheckExactlyOnce(t, s.fake, cfg, func(tag string) [][]byte { return sinkMessages(sink, tag, keep) })
		})
	}
	if n := sink.CountTag("edr.darktrace.respond.model_breach"); n != 0 {
		t.Errorf("%d breaches arrived under the default tag despite override_devo_tag", n)
	}
	if sink.MalformedCount() != 0 {
		t.Errorf("the fake Devo could not parse %d frames: %q", sink.MalformedCount(), sink.Malformed())
	}
	t.Run("file_1", func(t *testing.T) {
		data := mustReadFile(t, filepath.Join(s.dir, "out", "devo.log"))
		byTag := parseLines(t, "file_1", string(data), "file-host")
		fleettest.CheckExactlyOnce(t, s.fake, cfg, func(tag string) [][]byte { return byTag[tag] })
	})
	t.Run("console_1", func(t *testing.T) {
		byTag := parseLines(t, "console_1", console.String(), "console-host")
		fleettest.CheckExactlyOnce(t, s.fake, cfg, func(tag string) [][]byte { return byTag[tag] })
	})
	if strings.Contains(logs.buf.String(), httpToken) {
		t.Error("the http token appears in the logs")
	}
}

// TestFleetDevoGracefulStopMidBatch stops the fleet while a batch is on its way to a relay that
// is not reading. The stop waits for that delivery to be confirmed instead of cutting it, so the
// restart resends nothing: every event arrives exactly once.
func TestFleetDevoGracefulStopMidBatch(t *testing.T) {
	s := newDevoSetup(t, 6*time.Hour, map[string]float64{config.ServiceModelBreaches: 300})
	sink, err := devotest.NewServer(devotest.Options{RelayAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	host, port := splitAddr(sink.RelayAddr())
	load := func() (*config.Config, string) {
		return s.load(t, fmt.Sprintf("  relay_1: {type: relay, config: {address: %s, port: %s}}", host, port),
			`      modelbreaches: {start_time_in_utc_format: "START", override_time_window_interval_in_minutes: 10, look_back_in_minutes: 0}
`, nil)
	}
	cfg, _ := load()
	ln := fleettest.LaneOf(t, cfg, config.ServiceModelBreaches)
	logs := newLogCapture(t)
	f := mustLaunchFleet(t, cfg, fleet.Overrides{BatchEvents: 100}, fleet.Dependencies{Logger: logs.logger})
	b := f.Bus
	waitUntil(t, time.Minute, "part of the backfill to be delivered", func() bool {
		d, ok := deliveryCursor(t, b, ln)
		return ok && d.Events >= 300
	})
	// The relay stops reading; the next batch is written into the socket buffers and its sender
	// waits for the relay's EOF when the stop comes. The relay reads again 3 s later.
	accepted := sink.Accepted()
	sink.Stall(3 * time.Second)
	waitUntil(t, 30*time.Second, "a delivery to the stalled relay", func() bool { return sink.Accepted() > accepted })
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	mid := sink.Count()
	cfg, _ = load()
	f = mustLaunchFleet(t, cfg, fleet.Overrides{BatchEvents: 100}, fleet.Dependencies{Logger: logs.logger})
	b = f.Bus
	fleettest.WaitCaughtUp(t, b, cfg, s.end, time.Minute)
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped with a batch in flight after %d of %d breaches", mid, len(s.fake.Keys(config.ServiceModelBreaches)))
	fleettest.CheckExactlyOnce(t, s.fake, cfg, func(tag string) [][]byte { return sinkMessages(sink, tag, nil) })
}
