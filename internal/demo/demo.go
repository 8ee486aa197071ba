// Package demo runs `dtfleet demo`: a fake Darktrace appliance with days of data, a config for
// it, the whole fleet with an embedded NATS server until it caught up, and a table of what was
// delivered per Devo tag next to the appliance's ground truth.
//
// It may import internal/fleet, internal/config, proto and the test fakes (darktracetest,
// devotest); nothing but cmd/dtfleet imports it.
package demo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/progress"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// Options are the demo's settings (its flags).
type Options struct {
	// Dir holds the config, the NATS store (started afresh) and the output.
	Dir string
	// Days of appliance data to backfill.
	Days int
	// Output is where Devo lines go: "file" (Dir/devo.log) or "devo-tls" (a fake Devo receiver
	// over mutual TLS, writing Dir/devo-received/<tag>.log).
	Output string
	// Latency is the fake appliance's response latency.
	Latency time.Duration
	// Timeout gives up a demo not caught up by then.
	Timeout time.Duration
	// Quiet hides the progress bar.
	Quiet bool
}

// Summary is what the demo delivered, checked against the fake's ground truth.
type Summary struct {
	Delivered, Missing, Duplicates int
	// Slots is the windowed lanes' slots delivered up to the data's end, of the PlannedSlots the
	// demo's days make (snapshot slots, which come once per period for as long as the demo runs,
	// and a live slot after the data's end are not counted).
	Slots, PlannedSlots int
	// OutPath is the file or directory the Devo lines are in.
	OutPath string
}

// Run runs the demo, printing its story to stdout and its progress bar to stderr. A demo that
// delivered with missing or duplicated events is not an error: the Summary says so.
func Run(ctx context.Context, o Options, logger *slog.Logger, stdout, stderr io.Writer) (*Summary, error) {
	if o.Output != "file" && o.Output != "devo-tls" {
		return nil, fmt.Errorf("--output must be file or devo-tls, not %q", o.Output)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
		return nil, fmt.Errorf("clearing the demo's NATS store: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("creating %s: %w", dir, err)
	}
	end := time.Now().UTC().Truncate(time.Hour)
	start := end.Add(-time.Duration(o.Days) * 24 * time.Hour)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 1, Start: start, End: end, Latency: o.Latency, Jitter: o.Latency / 2})
	defer fake.Close()

	st := start.Format(time.RFC3339)
	file := fleet.File{
		Comment:     "Written by dtfleet demo: a fleet against the fake appliance at " + fake.URL + ".",
		Globals:     fleet.FileGlobals{ID: "demo", Name: "dtfleet-demo"},
		NATS:        fleet.FileNATS{StoreDir: filepath.Join(dir, "data"), Listen: "none"},
		Workers:     &fleet.FileWorkers{Concurrency: 16},
		Coordinator: &fleet.FileCoordinator{SafetyLagInSeconds: fleet.Ptr(0)},
		Inputs: map[string]fleet.FileInput{"darktrace": {
			RequestsPerSecond: 200,
			Credentials:       fleet.FileCredentials{PublicToken: darktracetest.DefaultPublicToken, PrivateToken: darktracetest.DefaultPrivateToken, Instance: fake.URL},
			Services: map[string]fleet.FileService{
				config.ServiceModelBreaches:  {StartTime: st},
				config.ServiceIncidentEvents: {StartTime: st},
				config.ServiceAntigena:       {StartTime: st},
				config.ServiceSummary:        {},
				config.ServiceStatus:         {Flatten: fleet.Ptr(true)},
			},
		}},
	}
	outPath := ""
	var sink *devotest.Server
	switch o.Output {
	case "file":
		outPath = filepath.Join(dir, "devo.log")
		_ = os.Remove(outPath)
		file.Outputs = map[string]fleet.FileOutput{"file_1": {Type: config.OutputFile, Config: fleet.FileOutputConfig{Path: outPath}}}
	case "devo-tls":
		certs := filepath.Join(dir, "certs")
		if err := os.MkdirAll(certs, 0o750); err != nil {
			return nil, err
		}
		pki, err := devotest.NewPKI(certs)
		if err != nil {
			return nil, fmt.Errorf("making the demo's certificates: %w", err)
		}
		outPath = filepath.Join(dir, "devo-received")
		_ = os.RemoveAll(outPath)
		sink, err = devotest.NewServer(devotest.Options{TLSAddr: "127.0.0.1:0", CertFile: pki.ServerCert, KeyFile: pki.ServerKey,
			ClientCAFile: pki.CA, Dir: outPath, Logger: logger})
		if err != nil {
			return nil, err
		}
		defer sink.Close()
		host, port, _ := strings.Cut(sink.TLSAddr(), ":")
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("the fake Devo's port %q: %w", port, err)
		}
		file.Outputs = map[string]fleet.FileOutput{"devo_1": {Type: config.OutputDevoPlatform,
			Config: fleet.FileOutputConfig{Address: host, Port: p, Chain: pki.CA, Cert: pki.ClientCert, Key: pki.ClientKey}}}
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg, err := file.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "dtfleet demo: fake Darktrace appliance at %s with %d days of data (%s .. %s)\n", fake.URL, o.Days, st, end.Format(time.RFC3339))
	fmt.Fprintf(stdout, "config: %s\n", cfgPath)

	// The progress counts the slots the demo waits for: every window of the windowed lanes from
	// the start to the data's end. The coordinator may also plan the window after it, cut short
	// at now, which the demo does not wait for; snapshot lanes deliver one slot per period for as
	// long as the demo runs. Both are counted apart.
	windowed := 0
	snapshot := map[string]bool{}
	for _, ln := range cfg.Lanes() {
		if ln.Svc.Snapshot {
			snapshot[ln.Service] = true
			continue
		}
		windowed += int(end.Sub(start) / ln.Svc.Window)
	}
	// A bar on a terminal, plain periodic lines otherwise (no carriage returns in logs).
	var bar *progress.Reporter
	if !o.Quiet {
		bar = progress.New(stderr, windowed, progress.Options{Terminal: progress.IsTerminal(stderr), Label: "slots delivered"})
		pctx, stopBar := context.WithCancel(ctx)
		barDone := make(chan struct{})
		go func() { defer close(barDone); _ = bar.Run(pctx) }()
		defer func() { stopBar(); <-barDone }()
	}
	var slots, others atomic.Int64
	var horizon horizons
	t0 := time.Now()
	f, err := fleet.Start(ctx, fleet.Fleet{Config: cfg, Roles: fleet.AllRoles, Deps: fleet.Dependencies{Logger: logger},
		Overrides: fleet.Overrides{Listen: "none", Tick: 100 * time.Millisecond},
		Hooks: fleet.Hooks{OnDelivered: func(d proto.Done, delivered int) {
			horizon.add(d)
			if snapshot[d.Service] || d.End > end.UnixMilli() {
				others.Add(1)
				return
			}
			slots.Add(1)
			if bar != nil {
				bar.Add(1, delivered)
			}
		}}})
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, o.Timeout)
	err = f.WaitCaughtUp(wctx, end)
	cancel()
	if serr := f.Stop(); err == nil {
		err = serr
	}
	if err != nil {
		return nil, fmt.Errorf("the demo did not catch up: %w", err)
	}
	if bar != nil {
		bar.Finish()
	}
	elapsed := time.Since(t0)

	// Read back what reached the output, and compare it with the appliance's ground truth.
	got := map[string][]string{}
	if sink != nil {
		for _, tag := range sink.Tags() {
			for _, r := range sink.Events(tag) {
				got[tag] = append(got[tag], r.Msg)
			}
		}
	} else if got, err = readDevoLines(outPath); err != nil {
		return nil, err
	}
	sum := &Summary{OutPath: outPath, Slots: int(slots.Load()), PlannedSlots: windowed}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(stdout, "\ncaught up in %s: %d slots delivered (and %d snapshot or live slots)\n\n", elapsed.Round(100*time.Millisecond), slots.Load(), others.Load())
	fmt.Fprintln(tw, "TAG\tSERVICE\tEVENTS DELIVERED\tGROUND TRUTH\tMISSING\tDUPLICATES")
	for _, ln := range cfg.Lanes() {
		msgs := got[ln.Svc.Tag]
		sum.Delivered += len(msgs)
		if ln.Svc.Snapshot {
			fmt.Fprintf(tw, "%s\t%s\t%d\t(snapshot)\t-\t-\n", ln.Svc.Tag, ln.Service, len(msgs))
			continue
		}
		count := map[string]int{}
		for _, m := range msgs {
			count[darktracetest.Key(ln.Service, []byte(m))]++
		}
		missing, dups := 0, 0
		want := dueKeys(fake, ln.Service, start, end, horizon.of(ln))
		for _, k := range want {
			switch n := count[k]; {
			case n == 0:
				missing++
			case n > 1:
				dups += n - 1
			}
		}
		sum.Missing += missing
		sum.Duplicates += dups
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", ln.Svc.Tag, ln.Service, len(msgs), len(want), missing, dups)
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "\n%d events delivered; Devo lines are in %s\n", sum.Delivered, outPath)
	fmt.Fprintf(stdout, "try: dtfleet validate -c %s\n", cfgPath)
	return sum, nil
}

// readDevoLines reads a file of Devo lines and returns the messages per tag.
func readDevoLines(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the demo's output: %w", err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		r, err := devotest.ParseLine(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		out[r.Tag] = append(out[r.Tag], r.Msg)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// horizons records, per lane, the end of the last slot the shipper delivered.
type horizons struct {
	mu  sync.Mutex
	end map[string]int64
}

func (h *horizons) add(d proto.Done) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.end == nil {
		h.end = map[string]int64{}
	}
	k := proto.LaneKey(d.Input, d.Service)
	h.end[k] = max(h.end[k], d.End)
}

func (h *horizons) of(ln config.Lane) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return time.UnixMilli(h.end[ln.Key()])
}

// dueKeys is the ground truth the demo checks: the keys of the events of service in [start, end)
// that the appliance had made visible by at, the end of the last slot the lane delivered. A
// breach is created after its time and is fetched by the slot of its creation time: one created
// after the last delivered slot is the next slot's to deliver, not this demo's to count.
// Antigena actions count once per codeid.
func dueKeys(fake *darktracetest.Server, service string, start, end, at time.Time) []string {
	var keys []string
	seen := map[string]bool{}
	for _, ev := range fake.Due(service, start, end, at) {
		k, _, _ := strings.Cut(ev.Key, ":")
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}
