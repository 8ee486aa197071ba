package main

// Process-level tests: the fleet as separate OS processes of the real dtfleet binary, stopped
// with SIGTERM or killed with SIGKILL in the middle of a backfill, with standby roles taking
// over. The fake appliance runs in the test process; the processes deliver to file outputs,
// which the tests read back and compare with the fake's ground truth.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// procBinary is the dtfleet binary the process tests run, built once per test binary.
var procBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// dtfleetBinary builds cmd/dtfleet (without -race: the child processes are the system under
// test, not the race detector's subject) and returns its path.
func dtfleetBinary(t *testing.T) string {
	t.Helper()
	procBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "dtfleet-proc-test-")
		if err != nil {
			procBinary.err = err
			return
		}
		procBinary.dir = dir
		goBin, err := exec.LookPath("go")
		if err != nil {
			procBinary.err = fmt.Errorf("finding the go command to build dtfleet: %w", err)
			return
		}
		path := filepath.Join(dir, "dtfleet")
		out, err := exec.Command(goBin, "build", "-o", path, ".").CombinedOutput()
		if err != nil {
			procBinary.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		procBinary.path = path
	})
	if procBinary.err != nil {
		t.Fatal(procBinary.err)
	}
	return procBinary.path
}

// withBinaryCleanup runs the tests, then removes the binary dtfleetBinary built.
type withBinaryCleanup struct{ m *testing.M }

func (c withBinaryCleanup) Run() int {
	code := c.m.Run()
	if procBinary.dir != "" {
		_ = os.RemoveAll(procBinary.dir)
	}
	return code
}

// gate holds back every windowed request whose window ends after a point in time until it is
// opened, so that a test can stop a process in the middle of a backfill for certain: the events
// after that point cannot have been fetched yet.
type gate struct {
	h     http.Handler
	after int64 // epoch ms
	open  chan struct{}
	once  sync.Once
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if end, err := strconv.ParseInt(r.URL.Query().Get("endtime"), 10, 64); err == nil && end > g.after {
		select {
		case <-g.open:
		case <-r.Context().Done():
			return
		}
	}
	g.h.ServeHTTP(w, r)
}

// procEnv is a fake appliance behind a gate, with the data window of a backfill.
type procEnv struct {
	fake       *darktracetest.Handler
	gate       *gate
	url        string
	start, end time.Time
	dir        string
}

func newProcEnv(t *testing.T, days int) *procEnv {
	t.Helper()
	end := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	start := end.Add(-time.Duration(days) * 24 * time.Hour)
	fake := darktracetest.NewHandler(darktracetest.Options{Seed: 7, Start: start, End: end, EventSize: 800,
		Latency: 5 * time.Millisecond, Jitter: 5 * time.Millisecond})
	// The last third of the range is held back until the test opens the gate.
	g := &gate{h: fake, after: start.Add(end.Sub(start) * 2 / 3).UnixMilli(), open: make(chan struct{})}
	srv := httptest.NewServer(g)
	t.Cleanup(func() {
		g.release()
		fake.Close()
		srv.CloseClientConnections()
		srv.Close()
	})
	return &procEnv{fake: fake, gate: g, url: srv.URL, start: start, end: end, dir: t.TempDir()}
}

// config writes a configuration file for one process and returns its path and parsed form. nats
// is the YAML flow mapping of the nats section; out is the file output's path. At most
// max_slots_ahead slots per lane are planned beyond the delivered one, so the gate holds at most
// 3×12 requests and never all of a worker's 40: every lane reaches the gate.
func (e *procEnv) config(t *testing.T, name, nats, out string) (string, *config.Config) {
	t.Helper()
	st := e.start.Format(time.RFC3339)
	y := fmt.Sprintf(`
globals: {id: proc-test, name: dtfleet-proc-test}
nats: %s
workers: {concurrency: 40}
coordinator: {safety_lag_in_seconds: 0, lease_ttl_in_seconds: 2, max_slots_ahead: 12}
shipper: {lease_ttl_in_seconds: 2}
outputs:
  file_1: {type: file, config: {path: %s}}
inputs:
  darktrace:
    requests_per_second: 1000
    credentials: {public_token: %s, private_token: %s, instance: %s}
    services:
      modelbreaches: {start_time_in_utc_format: %q}
      aianalyst_incidentevents: {start_time_in_utc_format: %q}
      antigena: {start_time_in_utc_format: %q}
      status: {}
      summarystatistics: {}
`, nats, out, darktracetest.DefaultPublicToken, darktracetest.DefaultPrivateToken, e.url, st, st, st)
	path := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(y), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

// windowedTotal is the number of events the fake holds for the windowed services.
func (e *procEnv) windowedTotal(cfg *config.Config) int {
	n := 0
	for _, ln := range cfg.Lanes() {
		if !ln.Svc.Snapshot {
			n += len(e.fake.Keys(ln.Service))
		}
	}
	return n
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// proc is one dtfleet child process. Its stderr and stdout (JSON logs) go to a file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// startProc starts `dtfleet --log-format json ARGS...`. The process is killed and waited for in
// t.Cleanup if the test did not stop it; its log is printed when the test failed.
func startProc(t *testing.T, dir, name string, args ...string) *proc {
	t.Helper()
	bin := dtfleetBinary(t)
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"--log-format", "json"}, args...)...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = lf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("log of %s (pid %d), last 8000 bytes:\n%s", name, cmd.Process.Pid, b)
		}
	})
	return p
}

// stop sends sig and waits for the process to exit. The deadline only catches a process that
// hangs; the process is killed then and the test fails.
func (p *proc) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(90 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within 90s of %v", p.name, sig)
		return nil
	}
}

// stopGracefully sends SIGTERM and requires a clean exit.
func (p *proc) stopGracefully(t *testing.T) {
	t.Helper()
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("%s after SIGTERM: %v (want exit status 0)", p.name, err)
	}
}

// kill sends SIGKILL and checks that the signal, not something else, ended the process.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	err := p.stop(t, syscall.SIGKILL)
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("%s after SIGKILL: %v", p.name, err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s exited with %v before SIGKILL took effect", p.name, err)
	}
}

// logCount counts the process's log records with message msg whose attributes include attrs.
func (p *proc) logCount(msg string, attrs map[string]string) int {
	b, _ := os.ReadFile(p.log)
	n := 0
	for line := range bytes.Lines(b) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) != nil || rec["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range attrs {
			if rec[k] != v {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// waitLog waits until the process logged msg (with attrs) at least once, or fails.
func (p *proc) waitLog(t *testing.T, msg string, attrs map[string]string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for p.logCount(msg, attrs) == 0 {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before logging %q %v", p.name, p.err, msg, attrs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q %v within 90s", p.name, msg, attrs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// leads waits until the process logged that it holds every lease of the given roles.
func (p *proc) leads(t *testing.T, cfg *config.Config, coordinator, shipper bool) {
	t.Helper()
	if coordinator {
		p.waitLog(t, "coordinator lease acquired; planning", nil)
	}
	if shipper {
		for _, ln := range cfg.Lanes() {
			p.waitLog(t, "shipper lease acquired; delivering", map[string]string{"input": ln.Input, "service": ln.Service})
		}
	}
}

// line is one delivered event read back from a file output.
type line struct {
	key string
	ts  int64
}

// readOutput reads a file output: for each service, its events in file order. A last line
// without its newline is the torn end of a write still in progress (or cut by SIGKILL) and is
// left out; every complete line must be a well-formed Devo line with a JSON message.
func readOutput(t *testing.T, path string, cfg *config.Config) map[string][]line {
	t.Helper()
	byTag := map[string]config.Lane{}
	for _, ln := range cfg.Lanes() {
		byTag[ln.Svc.Tag] = ln
	}
	out := map[string][]line{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i+1 < len(b) {
		b = b[:i+1]
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 16<<20)
	for n := 1; sc.Scan(); n++ {
		tag, msg, ok := parseDevoLine(sc.Text())
		ln, known := byTag[tag]
		if !ok || !known || !json.Valid([]byte(msg)) {
			t.Fatalf("%s:%d is not a Devo line of a configured tag with a JSON message: %.300q", path, n, sc.Text())
		}
		l := line{}
		if !ln.Svc.Snapshot {
			l.key = darktracetest.Key(ln.Service, []byte(msg))
			l.ts = fleettest.EventTime(t, ln.Service, []byte(msg))
		}
		out[ln.Service] = append(out[ln.Service], l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// parseDevoLine splits "<14>YYYY-MM-DD HH:MM:SS.mmm host tag: message" (see devo.AppendLine).
func parseDevoLine(s string) (tag, msg string, ok bool) {
	const head = len("<14>2006-01-02 15:04:05.000 ")
	if len(s) < head || !strings.HasPrefix(s, "<14>") || s[head-1] != ' ' {
		return "", "", false
	}
	_, rest, ok := strings.Cut(s[head:], " ")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, ": ")
}

// countWindowed counts the windowed events in a file output.
func countWindowed(t *testing.T, path string, cfg *config.Config) int {
	n := 0
	for _, ln := range cfg.Lanes() {
		if !ln.Svc.Snapshot {
			n += len(readOutput(t, path, cfg)[ln.Service])
		}
	}
	return n
}

// waitDelivered waits until the file output holds at least n windowed events, or fails.
func waitDelivered(t *testing.T, path string, cfg *config.Config, n int, procs ...*proc) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for countWindowed(t, path, cfg) < n {
		for _, p := range procs {
			select {
			case <-p.done:
				t.Fatalf("%s exited (%v) before %d events were delivered", p.name, p.err, n)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d events delivered within 2 minutes", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitWrite returns as soon as the file grows (or after a few seconds without a write). A
// SIGKILL sent right then most likely lands while a batch is being written and before the
// delivery checkpoint moved, the window in which a crash can resend a batch; whether it does
// decides nothing but the duplicates counted.
func awaitWrite(path string) {
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	was := size()
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && size() == was; {
		time.Sleep(200 * time.Microsecond)
	}
}

// checkHandOvers checks a lane delivered by a sequence of shippers (parts[i] is what the i-th
// one delivered, in order) against the fake's ground truth: nothing lost; every event once,
// except that where one part ends and the next begins, the tail of the earlier part may be
// repeated as the head of the next (the batch in flight when a shipper was killed, resent by its
// successor), and only when dupsAllowed; slot and event-time order in the de-duplicated sequence.
// It returns the number of duplicates per service and the number of distinct events.
func checkHandOvers(t *testing.T, env *procEnv, cfg *config.Config, parts []map[string][]line, dupsAllowed bool) (dups map[string]int, events int) {
	t.Helper()
	dups = map[string]int{}
	for _, ln := range cfg.Lanes() {
		if ln.Svc.Snapshot {
			n := 0
			for _, p := range parts {
				n += len(p[ln.Service])
			}
			if n == 0 {
				t.Errorf("%s: no snapshot delivered", ln.Service)
			}
			continue
		}
		var seq []line
		for i, p := range parts {
			next := p[ln.Service]
			// The repeated run: the longest head of next that equals the same-length tail of seq.
			k := min(len(seq), len(next))
			for ; k > 0; k-- {
				if slices.Equal(keysOf(seq[len(seq)-k:]), keysOf(next[:k])) {
					break
				}
			}
			if k > 0 {
				t.Logf("%s: the shipper of part %d resent the last %d events of part %d (the batch in flight)", ln.Service, i, k, i-1)
				if !dupsAllowed {
					t.Errorf("%s: %d events delivered again after a graceful hand-over", ln.Service, k)
				}
				dups[ln.Service] += k
			}
			seq = append(seq, next[k:]...)
		}
		want := env.fake.Keys(ln.Service)
		count := map[string]int{}
		for _, l := range seq {
			count[l.key]++
		}
		fleettest.CheckCounts(t, ln.Service+" (beyond any batch in flight)", want, count)
		if ln.Service == config.ServiceIncidentEvents { // breaches: creation-time slots; antigena: state-time slots
			for i := 1; i < len(seq); i++ {
				if seq[i].ts < seq[i-1].ts {
					t.Errorf("%s: event %d at %d delivered after one at %d", ln.Service, i, seq[i].ts, seq[i-1].ts)
					break
				}
			}
		}
		events += len(want)
	}
	return dups, events
}

func keysOf(ls []line) []string {
	ks := make([]string, len(ls))
	for i, l := range ls {
		ks[i] = l.key
	}
	return ks
}

// splitAt cuts each service's events of out after the counts in first (what the file held when
// the first process stopped): the part the first process delivered and the part after it.
func splitAt(first, out map[string][]line) []map[string][]line {
	a, b := map[string][]line{}, map[string][]line{}
	for svc, ls := range out {
		n := min(len(first[svc]), len(ls))
		a[svc], b[svc] = ls[:n], ls[n:]
	}
	return []map[string][]line{a, b}
}

// connectTo connects the test to a fleet's bus, for waitCaughtUp.
func connectTo(t *testing.T, url, store string) *bus.Bus {
	t.Helper()
	b, err := bus.Connect(context.Background(), config.NATS{URL: url}, bus.Options{Name: "dtfleet-proc-test", JoinStore: store})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestProcessRunStopMidBackfill stops `dtfleet run` in the middle of a backfill, with SIGTERM
// (graceful: no event may be delivered twice) or SIGKILL (only the batch in flight may be
// delivered again, and the test counts it), starts it again on the same store and output, and
// checks that every event of the backfill was delivered, in order.
func TestProcessRunStopMidBackfill(t *testing.T) {
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{"sigterm", syscall.SIGTERM},
		{"sigkill", syscall.SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newProcEnv(t, 2)
			addr := freeAddr(t)
			out := filepath.Join(env.dir, "out", "devo.log")
			cfgPath, cfg := env.config(t, "run", fmt.Sprintf("{store_dir: %s, listen: %q}", filepath.Join(env.dir, "data"), addr), out)
			total := env.windowedTotal(cfg)

			first := startProc(t, env.dir, "run-1", "run", "-c", cfgPath)
			waitDelivered(t, out, cfg, total/3, first)
			if tt.sig == syscall.SIGKILL {
				awaitWrite(out)
				first.kill(t)
			} else {
				// Requests held at the gate would otherwise wait out the workers' shutdown grace.
				env.gate.release()
				first.stopGracefully(t)
			}
			before := readOutput(t, out, cfg)
			confirmed := statusOf(t, env.dir, cfgPath)
			if n := countWindowed(t, out, cfg); n >= total {
				t.Fatalf("all %d events were delivered before the stop; the test proves nothing", n)
			}
			env.gate.release()

			second := startProc(t, env.dir, "run-2", "run", "-c", cfgPath)
			second.waitLog(t, "embedded NATS ready", nil)
			b := connectTo(t, "nats://"+addr, filepath.Join(env.dir, "data"))
			fleettest.WaitCaughtUp(t, b, cfg, env.end, 2*time.Minute)
			b.Close()
			second.stopGracefully(t)

			dups, events := checkHandOvers(t, env, cfg, splitAt(before, readOutput(t, out, cfg)), tt.sig == syscall.SIGKILL)
			checkInFlight(t, cfg, dups, before, confirmed, tt.sig == syscall.SIGKILL)
			t.Logf("duplicates after %v: %d of %d events (%d of them in the file at the stop)", tt.sig,
				sumOf(dups), events, countWindowedIn(before))
		})
	}
}

// statusOf runs `dtfleet status --json` and returns the events each lane's delivery checkpoint
// counts as delivered.
func statusOf(t *testing.T, dir, cfgPath string) map[string]uint64 {
	t.Helper()
	cmd := exec.Command(dtfleetBinary(t), "status", "--json", "-c", cfgPath)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("dtfleet status: %v\n%s", err, stderr.Bytes())
	}
	var st status.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("dtfleet status --json: %v\n%s", err, b)
	}
	out := map[string]uint64{}
	for _, l := range st.Lanes {
		out[l.Service] = l.Events
	}
	return out
}

// checkInFlight checks that what was delivered again after a stop is no more than the stopped
// shipper had written without confirming: the lines of a lane in the file at the stop beyond the
// events its delivery checkpoint counted. After a graceful stop nothing may be unconfirmed.
func checkInFlight(t *testing.T, cfg *config.Config, dups map[string]int, atStop map[string][]line, confirmed map[string]uint64, crash bool) {
	t.Helper()
	for _, ln := range cfg.Lanes() {
		if ln.Svc.Snapshot {
			continue
		}
		written := len(atStop[ln.Service])
		c, ok := confirmed[ln.Service]
		if !ok {
			continue // the lane's checkpoint could not be read at the stop; see the caller
		}
		unconfirmed := written - int(c)
		switch {
		case unconfirmed < 0:
			t.Errorf("%s: the checkpoint counts %d events delivered but the file held %d", ln.Service, c, written)
		case !crash && unconfirmed > 0:
			t.Errorf("%s: %d events written but not confirmed by a graceful stop", ln.Service, unconfirmed)
		case dups[ln.Service] > unconfirmed:
			t.Errorf("%s: %d events delivered again, more than the %d the crash left unconfirmed", ln.Service, dups[ln.Service], unconfirmed)
		}
		if unconfirmed > 0 {
			t.Logf("%s: %d events were written but unconfirmed at the stop; %d delivered again", ln.Service, unconfirmed, dups[ln.Service])
		}
	}
}

func sumOf(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func countWindowedIn(m map[string][]line) int {
	n := 0
	for svc, ls := range m {
		if svc != config.ServiceStatus && svc != config.ServiceSummary {
			n += len(ls)
		}
	}
	return n
}

// TestProcessStandbyRolesTakeOver runs the roles as separate processes against one bus (an
// embedded server in the test process, reached through its listener with nats.url): a leading
// coordinator and shipper, a standby of each, and a worker. In the middle of a backfill the
// leaders are stopped, with SIGTERM (they release their leases: no event may be delivered twice)
// or SIGKILL (the standbys wait for the leases to expire; only the batch in flight may be
// delivered again). The standbys must take over and finish the backfill, losing nothing.
func TestProcessStandbyRolesTakeOver(t *testing.T) {
	tests := []struct {
		name string
		sig  syscall.Signal
	}{
		{"sigterm", syscall.SIGTERM},
		{"sigkill", syscall.SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newProcEnv(t, 2)
			unused := filepath.Join(env.dir, "unused.log") // roles without a shipper open no output
			_, cfg := env.config(t, "probe", "{url: nats://127.0.0.1:1}", unused)
			ctx := context.Background()
			// The test's own embedded server on the store, provisioned as the fleet provisions it.
			embedded := *cfg
			embedded.NATS = config.NATS{StoreDir: filepath.Join(env.dir, "data")}
			b, err := fleet.Connect(ctx, &embedded, fleet.AllRoles, "127.0.0.1:-1", fleettest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(b.Close)
			natsYAML := fmt.Sprintf("{url: %q}", b.ClientURL)
			aOut, cOut := filepath.Join(env.dir, "out", "a.log"), filepath.Join(env.dir, "out", "c.log")
			coordPath, _ := env.config(t, "coordinator", natsYAML, unused)
			aPath, _ := env.config(t, "shipper-a", natsYAML, aOut)
			cPath, _ := env.config(t, "shipper-c", natsYAML, cOut)
			total := env.windowedTotal(cfg)

			// The leaders start first and take every lease; then the standbys and the worker.
			coordA := startProc(t, env.dir, "coordinator-a", "coordinator", "-c", coordPath)
			coordA.leads(t, cfg, true, false)
			shipA := startProc(t, env.dir, "shipper-a", "shipper", "-c", aPath)
			shipA.leads(t, cfg, false, true)
			coordB := startProc(t, env.dir, "coordinator-b", "coordinator", "-c", coordPath)
			shipC := startProc(t, env.dir, "shipper-c", "shipper", "-c", cPath)
			worker := startProc(t, env.dir, "worker", "worker", "-c", coordPath)
			waitDelivered(t, aOut, cfg, total/3, coordA, shipA, coordB, shipC, worker)
			if coordB.logCount("coordinator lease acquired; planning", nil) > 0 || shipC.logCount("shipper lease acquired; delivering", nil) > 0 {
				t.Fatal("a standby led while the leaders held the leases")
			}

			var confirmed map[string]uint64
			if tt.sig == syscall.SIGKILL {
				awaitWrite(aOut)
				shipA.kill(t)
				coordA.kill(t)
				confirmed = checkpointsBeforeTakeOver(t, b, cfg, shipC)
			} else {
				coordA.stopGracefully(t)
				shipA.stopGracefully(t)
				confirmed = checkpointsBeforeTakeOver(t, b, cfg, shipC)
			}
			before := readOutput(t, aOut, cfg)
			if n := countWindowedIn(before); n >= total {
				t.Fatalf("all %d events were delivered before the stop; the test proves nothing", n)
			}
			env.gate.release()
			coordB.leads(t, cfg, true, false)
			shipC.leads(t, cfg, false, true)
			fleettest.WaitCaughtUp(t, b, cfg, env.end, 2*time.Minute)
			for _, p := range []*proc{coordB, shipC, worker} {
				p.stopGracefully(t)
			}

			after := readOutput(t, cOut, cfg)
			if countWindowedIn(after) == 0 {
				t.Fatal("the standby shipper delivered nothing")
			}
			dups, events := checkHandOvers(t, env, cfg, []map[string][]line{before, after}, tt.sig == syscall.SIGKILL)
			checkInFlight(t, cfg, dups, before, confirmed, tt.sig == syscall.SIGKILL)
			t.Logf("duplicates after %v of the leaders: %d of %d events (%d delivered by the first shipper, %d by the standby)",
				tt.sig, sumOf(dups), events, countWindowedIn(before), countWindowedIn(after))
		})
	}
}

// checkpointsBeforeTakeOver reads the events each lane's delivery checkpoint counts, once the
// leading shipper is gone, for the lanes the standby shipper has not taken over yet (it can move a
// checkpoint only after it logged the lease); the others are left out and not bounded.
func checkpointsBeforeTakeOver(t *testing.T, b *bus.Bus, cfg *config.Config, standby *proc) map[string]uint64 {
	t.Helper()
	st, err := status.Read(context.Background(), b, cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, l := range st.Lanes {
		if standby.logCount("shipper lease acquired; delivering", map[string]string{"input": l.Input, "service": l.Service}) > 0 {
			t.Logf("%s: the standby took over before the checkpoint was read; its resend is not bounded here", l.Service)
			continue
		}
		out[l.Service] = l.Events
	}
	return out
}
