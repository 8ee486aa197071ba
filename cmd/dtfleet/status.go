package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/proto"
)

// laneStatus is one lane's state as `dtfleet status` shows it.
type laneStatus struct {
	Input          string    `json:"input"`
	Service        string    `json:"service"`
	PlannedSeq     uint64    `json:"planned_seq"`
	PlannedUntil   time.Time `json:"planned_until,omitzero"`
	Pending        int       `json:"pending_publish"`
	DeliveredSeq   uint64    `json:"delivered_seq"`
	DeliveredUntil time.Time `json:"delivered_until,omitzero"`
	Backlog        uint64    `json:"backlog_slots"`
	Lag            string    `json:"lag,omitempty"`
	Events         uint64    `json:"events_delivered"`
	Duplicates     uint64    `json:"duplicates_dropped"`
	FailedPassed   uint64    `json:"failed_slots_passed"`
	Epoch          uint64    `json:"epoch"`
	Shipper        string    `json:"shipper_leader,omitempty"`
}

type failedSlot struct {
	Input   string    `json:"input"`
	Service string    `json:"service"`
	Seq     uint64    `json:"seq"`
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
	// Retries counts the automatic retries that failed; NextRetry is when the next one is due
	// (absent when failed slots are not retried automatically).
	Retries   int        `json:"retries"`
	NextRetry *time.Time `json:"next_retry,omitempty"`
}

type workerSeen struct {
	ID       string    `json:"id"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Slots    uint64    `json:"slots_done"`
	InFlight int       `json:"in_flight"`
	Seen     time.Time `json:"last_seen"`
}

type fleetStatus struct {
	Now         time.Time    `json:"now"`
	Coordinator string       `json:"coordinator_leader,omitempty"`
	Lanes       []laneStatus `json:"lanes"`
	Failed      []failedSlot `json:"failed_slots"`
	Workers     []workerSeen `json:"workers"`
}

func newStatusCmd(g *globalFlags) *cobra.Command {
	var (
		cf     *configFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show per input and service: planned and delivered cursors, lag, backlog, failed slots, leaders, workers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := g.logger()
			if err != nil {
				return err
			}
			cfg, err := cf.load()
			if err != nil {
				return err
			}
			b, err := connectClient(cmd.Context(), cfg, logger)
			if err != nil {
				return err
			}
			defer b.Close()
			st, err := collectStatus(cmd.Context(), b, cfg, time.Now())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cf = addConfigFlags(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func getMsg[T any, P interface {
	*T
	proto.Versioned
}](ctx context.Context, kv jetstream.KeyValue, key string) (*T, error) {
	e, err := kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	v := new(T)
	if err := proto.Decode(e.Value(), P(v)); err != nil {
		return nil, fmt.Errorf("reading %s: %w", key, err)
	}
	return v, nil
}

// collectStatus reads every checkpoint, lease, failure record and heartbeat.
func collectStatus(ctx context.Context, b *bus.Bus, cfg *config.Config, now time.Time) (*fleetStatus, error) {
	kv := map[string]jetstream.KeyValue{}
	for _, name := range []string{proto.BucketPlan, proto.BucketDelivered, proto.BucketLeases, proto.BucketFailed, proto.BucketWorkers} {
		k, err := b.KV(ctx, name)
		if err != nil {
			return nil, err
		}
		kv[name] = k
	}
	st := &fleetStatus{Now: now.UTC(), Lanes: []laneStatus{}, Failed: []failedSlot{}, Workers: []workerSeen{}}
	if l, err := getMsg[proto.Lease](ctx, kv[proto.BucketLeases], proto.LeaseCoordinator); err != nil {
		return nil, err
	} else if l != nil {
		st.Coordinator = l.Holder
	}
	for _, ln := range cfg.Lanes() {
		key := proto.LaneKey(ln.Input, ln.Service)
		ls := laneStatus{Input: ln.Input, Service: ln.Service}
		plan, err := getMsg[proto.Plan](ctx, kv[proto.BucketPlan], key)
		if err != nil {
			return nil, err
		}
		if plan != nil {
			ls.PlannedSeq, ls.Pending, ls.Epoch = plan.NextSeq-1, len(plan.Pending), plan.Epoch
			if plan.Cursor > 0 {
				ls.PlannedUntil = time.UnixMilli(plan.Cursor).UTC()
				if ln.Svc.Snapshot {
					ls.PlannedUntil = ls.PlannedUntil.Add(ln.Svc.Period)
				}
			}
		}
		d, err := getMsg[proto.Delivery](ctx, kv[proto.BucketDelivered], key)
		if err != nil {
			return nil, err
		}
		if d != nil {
			ls.DeliveredSeq, ls.Events, ls.Duplicates, ls.FailedPassed = d.Seq, d.Events, d.Dups, d.Failed
			if d.End > 0 {
				ls.DeliveredUntil = time.UnixMilli(d.End).UTC()
				ls.Lag = now.Sub(ls.DeliveredUntil).Round(time.Second).String()
			}
		}
		if ls.PlannedSeq > ls.DeliveredSeq {
			ls.Backlog = ls.PlannedSeq - ls.DeliveredSeq
		}
		if l, err := getMsg[proto.Lease](ctx, kv[proto.BucketLeases], proto.ShipperLease(ln.Input, ln.Service)); err != nil {
			return nil, err
		} else if l != nil {
			ls.Shipper = l.Holder
		}
		st.Lanes = append(st.Lanes, ls)
	}
	for _, k := range listKeys(ctx, kv[proto.BucketFailed]) {
		f, err := getMsg[proto.Failure](ctx, kv[proto.BucketFailed], k)
		if err != nil || f == nil {
			continue
		}
		fs := failedSlot{Input: f.Input, Service: f.Service, Seq: f.Seq, Retries: f.Retries,
			From: time.UnixMilli(f.Start).UTC(), To: time.UnixMilli(f.End).UTC(), Error: f.Error, At: time.UnixMilli(f.At).UTC()}
		if f.NextRetry > 0 {
			next := time.UnixMilli(f.NextRetry).UTC()
			fs.NextRetry = &next
		}
		st.Failed = append(st.Failed, fs)
	}
	sort.Slice(st.Failed, func(i, j int) bool { return st.Failed[i].From.Before(st.Failed[j].From) })
	for _, k := range listKeys(ctx, kv[proto.BucketWorkers]) {
		h, err := getMsg[proto.Heartbeat](ctx, kv[proto.BucketWorkers], k)
		if err != nil || h == nil {
			continue
		}
		st.Workers = append(st.Workers, workerSeen{ID: h.ID, Host: h.Host, PID: h.PID, Slots: h.Slots, InFlight: h.InFlight, Seen: time.UnixMilli(h.UpdatedAt).UTC()})
	}
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].ID < st.Workers[j].ID })
	return st, nil
}

func listKeys(ctx context.Context, kv jetstream.KeyValue) []string {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func printStatus(w io.Writer, st *fleetStatus) {
	fmt.Fprintf(w, "dtfleet status at %s\ncoordinator leader: %s\n\n", st.Now.Format(time.RFC3339), orNone(st.Coordinator))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INPUT\tSERVICE\tPLANNED\tPLANNED UNTIL\tDELIVERED\tDELIVERED UNTIL\tLAG\tBACKLOG\tEVENTS\tDUPS\tFAILED\tSHIPPER")
	for _, l := range st.Lanes {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", l.Input, l.Service, l.PlannedSeq, fmtTime(l.PlannedUntil),
			l.DeliveredSeq, fmtTime(l.DeliveredUntil), orNone(l.Lag), l.Backlog, l.Events, l.Duplicates, l.FailedPassed, orNone(l.Shipper))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nfailed slots (retried automatically when a next retry is shown; dtfleet replay replays one now): %d\n", len(st.Failed))
	for _, f := range st.Failed {
		next := "next retry: none (replay it once the cause is fixed)"
		if f.NextRetry != nil {
			next = fmt.Sprintf("next retry %s (retries so far %d)", f.NextRetry.Format(time.RFC3339), f.Retries)
		}
		fmt.Fprintf(w, "  %s.%s seq %d %s - %s: %s; %s\n", f.Input, f.Service, f.Seq, f.From.Format(time.RFC3339), f.To.Format(time.RFC3339), firstLine(f.Error), next)
	}
	fmt.Fprintf(w, "\nworkers seen: %d\n", len(st.Workers))
	for _, wk := range st.Workers {
		fmt.Fprintf(w, "  %s (host %s pid %d): %d slots done, %d in flight, last seen %s\n", wk.ID, wk.Host, wk.PID, wk.Slots, wk.InFlight, wk.Seen.Format(time.RFC3339))
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
