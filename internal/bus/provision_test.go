package bus_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/proto"
)

// startingCluster is a JetStream whose first create-or-update requests fail the way a cluster
// that is still starting answers: a timeout, then "JetStream system temporarily unavailable".
type startingCluster struct {
	jetstream.JetStream
	failures atomic.Int32 // requests still to fail
	calls    atomic.Int32
}

func (s *startingCluster) fail() error {
	s.calls.Add(1)
	switch n := s.failures.Add(-1); {
	case n < 0:
		return nil
	case n%2 == 0:
		return context.DeadlineExceeded
	default:
		return &jetstream.APIError{Code: 503, Description: "JetStream system temporarily unavailable"}
	}
}

func (s *startingCluster) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.JetStream.CreateStream(ctx, cfg)
}

func (s *startingCluster) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.JetStream.CreateKeyValue(ctx, cfg)
}

// TestProvisionRetriesAStartingCluster: a fleet started all at once meets a cluster that times
// out and answers 503 while it elects its leaders; provisioning rides that out instead of making
// the process exit (issue 9, row 10).
func TestProvisionRetriesAStartingCluster(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	js := &startingCluster{JetStream: b.JS}
	js.failures.Store(4)
	b.JS = js
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := b.Provision(ctx, bus.Settings{LeaseTTL: 10 * time.Second, DedupeTTL: time.Hour}); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if got := js.calls.Load(); got < 4+2+7 {
		t.Fatalf("%d create-or-update calls; want the 4 failed ones retried and all 9 steps done", got)
	}
	for _, bucket := range []string{"dtf_plan", "dtf_leases", "dtf_rate"} {
		if _, err := b.KV(ctx, bucket); err != nil {
			t.Errorf("bucket %s after provisioning: %v", bucket, err)
		}
	}
}

// TestProvisionStopsOnAConfigurationError: an answer no retry can change is returned at once,
// naming what was being provisioned.
func TestProvisionStopsOnAConfigurationError(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	b.JS = refusing{b.JS}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err := b.Provision(ctx, bus.Settings{LeaseTTL: 10 * time.Second, DedupeTTL: time.Hour})
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || ctx.Err() != nil {
		t.Fatalf("Provision = %v; want the server's refusal at once", err)
	}
}

type refusing struct{ jetstream.JetStream }

func (refusing) CreateStream(context.Context, jetstream.StreamConfig) (jetstream.Stream, error) {
	return nil, &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}
}

// TestProvisionUpdatesAStreamWithAnotherConfiguration: provisioning creates first (see
// createOrUpdateStream), and a stream that exists with other settings (one an older version
// created) is updated to the current ones, not refused.
func TestProvisionUpdatesAStreamWithAnotherConfiguration(t *testing.T) {
	t.Parallel()
	b := bustest.New(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	s, err := b.JS.Stream(ctx, proto.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	old := s.CachedInfo().Config
	want := old.Duplicates
	old.Duplicates = time.Minute
	if _, err := b.JS.UpdateStream(ctx, old); err != nil {
		t.Fatalf("setting another duplicates window: %v", err)
	}
	if err := b.Provision(ctx, bus.Settings{LeaseTTL: 10 * time.Second, DedupeTTL: time.Hour}); err != nil {
		t.Fatalf("Provision over another configuration: %v", err)
	}
	info, err := b.JS.Stream(ctx, proto.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.Duplicates; got != want || want == time.Minute {
		t.Fatalf("stream %s duplicates window = %s after provisioning, want %s", proto.StreamWork, got, want)
	}
}
