package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// demoOptions are the demo's flags.
type demoOptions struct {
	dir     string
	days    int
	output  string
	latency time.Duration
	timeout time.Duration
	quiet   bool
}

func newDemoCmd(g *globalFlags) *cobra.Command {
	o := demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Backfill a week from a fake Darktrace appliance into Devo lines, with no config and no Darktrace",
		Long: `demo starts the fake Darktrace appliance with a week of data, writes a config for it
(DIR/config.yaml), runs the whole fleet with an embedded NATS server (DIR/data, started afresh),
shows progress, stops when caught up, and prints what was delivered per Devo tag, checked against
the appliance's ground truth.

--output file (default) writes Devo lines to DIR/devo.log. --output devo-tls sends them over
mutual TLS to a fake Devo receiver (certificates made at run time in DIR/certs), which writes what
it received to DIR/devo-received/<tag>.log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Root().PersistentFlags().Changed("log-level") {
				g.logLevel = "warn" // the progress bar and the summary tell the story
			}
			logger, err := g.logger()
			if err != nil {
				return err
			}
			sum, err := runDemo(cmd.Context(), o, logger, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if sum.missing > 0 || sum.dups > 0 {
				return &exitError{code: 2, err: fmt.Errorf("demo finished with %d missing and %d duplicated events", sum.missing, sum.dups)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.dir, "dir", "dtfleet-demo", "working directory for the config, the NATS store and the output")
	cmd.Flags().IntVar(&o.days, "days", 7, "days of appliance data to backfill")
	cmd.Flags().StringVar(&o.output, "output", "file", "where Devo lines go: file or devo-tls")
	cmd.Flags().DurationVar(&o.latency, "latency", 20*time.Millisecond, "fake appliance response latency")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up if not caught up by then")
	cmd.Flags().BoolVar(&o.quiet, "quiet", false, "no progress bar")
	return cmd
}

// demoSummary is what the demo delivered, checked against the fake's ground truth.
type demoSummary struct {
	delivered, missing, dups int
	outPath                  string
}

func runDemo(ctx context.Context, o demoOptions, logger *slog.Logger, stdout, stderr io.Writer) (*demoSummary, error) {
	if o.output != "file" && o.output != "devo-tls" {
		return nil, fmt.Errorf("--output must be file or devo-tls, not %q", o.output)
	}
	dir, err := filepath.Abs(o.dir)
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
	start := end.Add(-time.Duration(o.days) * 24 * time.Hour)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 1, Start: start, End: end, Latency: o.latency, Jitter: o.latency / 2})
	defer fake.Close()

	output, outPath := "", ""
	var sink *devotest.Server
	switch o.output {
	case "file":
		outPath = filepath.Join(dir, "devo.log")
		_ = os.Remove(outPath)
		output = fmt.Sprintf("  file_1: {type: file, config: {path: %s}}", outPath)
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
		output = fmt.Sprintf("  devo_1: {type: devo_platform, config: {address: %s, port: %s, chain: %s, cert: %s, key: %s}}",
			host, port, pki.CA, pki.ClientCert, pki.ClientKey)
	}
	st := start.Format(time.RFC3339)
	y := fmt.Sprintf(`# Written by dtfleet demo: a fleet against the fake appliance at %s.
globals: {id: demo, name: dtfleet-demo}
nats: {store_dir: %s, listen: none}
workers: {concurrency: 16}
coordinator: {safety_lag_in_seconds: 0}
outputs:
%s
inputs:
  darktrace:
    requests_per_second: 200
    credentials: {public_token: %s, private_token: %s, instance: %s}
    services:
      modelbreaches: {start_time_in_utc_format: %q}
      aianalyst_incidentevents: {start_time_in_utc_format: %q}
      antigena: {start_time_in_utc_format: %q}
      summarystatistics: {}
      status: {flatten: true}
`, fake.URL, filepath.Join(dir, "data"), output, darktracetest.DefaultPublicToken, darktracetest.DefaultPrivateToken, fake.URL, st, st, st)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		return nil, err
	}
	cfg, err := config.Load(cfgPath, config.LoadOptions{})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(stdout, "dtfleet demo: fake Darktrace appliance at %s with %d days of data (%s .. %s)\n", fake.URL, o.days, st, end.Format(time.RFC3339))
	fmt.Fprintf(stdout, "config: %s\n", cfgPath)

	windowed := 0
	for _, ln := range cfg.Lanes() {
		if ln.Svc.Snapshot {
			windowed++ // one snapshot slot each
			continue
		}
		windowed += int(end.Sub(start) / ln.Svc.Window)
	}
	var bar *progressbar.ProgressBar
	if !o.quiet {
		bar = progressbar.NewOptions(windowed, progressbar.OptionSetWriter(stderr), progressbar.OptionSetDescription("slots delivered"),
			progressbar.OptionShowCount(), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
	}
	var slots atomic.Int64
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	busc := make(chan *bus.Bus, 1)
	errc := make(chan error, 1)
	t0 := time.Now()
	go func() {
		errc <- runFleet(rctx, cfg, allRoles, fleetOptions{listen: "none", tick: 100 * time.Millisecond,
			onBus: func(b *bus.Bus) { busc <- b },
			onDelivered: func(proto.Done, int) {
				slots.Add(1)
				if bar != nil {
					_ = bar.Add(1)
				}
			}}, logger)
	}()
	var b *bus.Bus
	select {
	case b = <-busc:
	case err := <-errc:
		return nil, err
	}
	if err := waitDemo(rctx, b, cfg, end, o.timeout, errc); err != nil {
		cancel()
		<-errc
		return nil, err
	}
	cancel()
	if err := <-errc; err != nil {
		return nil, err
	}
	if bar != nil {
		_ = bar.Finish()
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
	sum := &demoSummary{outPath: outPath}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(stdout, "\ncaught up in %s: %d slots delivered\n\n", elapsed.Round(100*time.Millisecond), slots.Load())
	fmt.Fprintln(tw, "TAG\tSERVICE\tEVENTS DELIVERED\tGROUND TRUTH\tMISSING\tDUPLICATES")
	for _, ln := range cfg.Lanes() {
		msgs := got[ln.Svc.Tag]
		sum.delivered += len(msgs)
		if ln.Svc.Snapshot {
			fmt.Fprintf(tw, "%s\t%s\t%d\t(snapshot)\t-\t-\n", ln.Svc.Tag, ln.Service, len(msgs))
			continue
		}
		count := map[string]int{}
		for _, m := range msgs {
			count[darktracetest.Key(ln.Service, []byte(m))]++
		}
		missing, dups := 0, 0
		want := fake.Keys(ln.Service)
		for _, k := range want {
			switch n := count[k]; {
			case n == 0:
				missing++
			case n > 1:
				dups += n - 1
			}
		}
		sum.missing += missing
		sum.dups += dups
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", ln.Svc.Tag, ln.Service, len(msgs), len(want), missing, dups)
	}
	_ = tw.Flush()
	fmt.Fprintf(stdout, "\n%d events delivered; Devo lines are in %s\n", sum.delivered, outPath)
	fmt.Fprintf(stdout, "try: dtfleet validate -c %s\n", cfgPath)
	return sum, nil
}

// waitDemo waits until every windowed lane delivered up to end and every snapshot lane once.
func waitDemo(ctx context.Context, b *bus.Bus, cfg *config.Config, end time.Time, timeout time.Duration, errc chan error) error {
	kv, err := b.KV(ctx, proto.BucketDelivered)
	if err != nil {
		return err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		done := true
		for _, ln := range cfg.Lanes() {
			e, err := kv.Get(ctx, proto.LaneKey(ln.Input, ln.Service))
			if err != nil {
				if errors.Is(err, jetstream.ErrKeyNotFound) {
					done = false
					break
				}
				return err
			}
			var d proto.Delivery
			if err := proto.Decode(e.Value(), &d); err != nil {
				return err
			}
			if (ln.Svc.Snapshot && d.Seq < 1) || (!ln.Svc.Snapshot && d.End < end.UnixMilli()) {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			errc <- err
			return fmt.Errorf("the fleet stopped before catching up: %w", err)
		case <-deadline.C:
			return fmt.Errorf("not caught up after %v", timeout)
		case <-tick.C:
		}
	}
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
