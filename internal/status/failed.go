package status

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/dtfleet/dtfleet/proto"
)

// failedSlot is the status view of a failure record.
func failedSlot(f *proto.Failure) FailedSlot {
	fs := FailedSlot{Input: f.Input, Service: f.Service, Seq: f.Seq, Retries: f.Retries,
		From: time.UnixMilli(f.Start).UTC(), To: time.UnixMilli(f.End).UTC(), Error: f.Error, At: time.UnixMilli(f.At).UTC(),
		Key: proto.FailedKey(f.Input, f.Service, f.Start, f.End), Replay: proto.ReplayCommand(f.Input, f.Service, f.Start, f.End)}
	if f.Key != "" {
		fs.Key, fs.Event = f.Key, f.Event
	}
	if f.NextRetry > 0 {
		next := time.UnixMilli(f.NextRetry).UTC()
		fs.NextRetry = &next
	}
	return fs
}

// ListFailed reads every failure record in proto.BucketFailed, oldest window first.
func ListFailed(ctx context.Context, src KVSource) ([]FailedSlot, error) {
	kv, err := src.KV(ctx, proto.BucketFailed)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", proto.BucketFailed, err)
	}
	recs, err := listAll[proto.Failure](ctx, kv, proto.BucketFailed)
	if err != nil {
		return nil, err
	}
	out := make([]FailedSlot, 0, len(recs))
	for _, f := range recs {
		out = append(out, failedSlot(f))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From.Before(out[j].From) })
	return out, nil
}

// ClearFailed deletes the failure records match selects and returns them. Clearing a record
// only silences its alert: the window's events stay missing until it is replayed.
func ClearFailed(ctx context.Context, src KVSource, match func(FailedSlot) bool) ([]FailedSlot, error) {
	all, err := ListFailed(ctx, src)
	if err != nil {
		return nil, err
	}
	kv, err := src.KV(ctx, proto.BucketFailed)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", proto.BucketFailed, err)
	}
	var cleared []FailedSlot
	for _, f := range all {
		if !match(f) {
			continue
		}
		if err := kv.Delete(ctx, f.Key); err != nil {
			return cleared, fmt.Errorf("clearing failure record %s: %w", f.Key, err)
		}
		cleared = append(cleared, f)
	}
	return cleared, nil
}

// PrintFailed writes the failed slots for people, each with the command that replays it.
func PrintFailed(w io.Writer, failed []FailedSlot) {
	for _, f := range failed {
		next := "next retry: none (replay it once the cause is fixed)"
		if f.NextRetry != nil {
			next = fmt.Sprintf("next retry %s (retries so far %d)", f.NextRetry.Format(time.RFC3339), f.Retries)
		}
		fmt.Fprintf(w, "%s  %s.%s seq %d %s - %s: %s; %s\n    %s\n", f.Key, f.Input, f.Service, f.Seq,
			proto.FormatMSExact(f.From.UnixMilli()), proto.FormatMSExact(f.To.UnixMilli()), firstLine(f.Error), next, f.Replay)
	}
}
