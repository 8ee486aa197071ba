package bus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"github.com/dtfleet/dtfleet/proto"
)

// startCluster starts a fresh 3-node cluster (bustest.Cluster) and returns its client URLs.
func startCluster(t *testing.T) string {
	t.Helper()
	var urls []string
	for _, s := range bustest.Cluster(t) {
		urls = append(urls, s.ClientURL())
	}
	return strings.Join(urls, ",")
}

// provisionAttempts are the retries one process's Provision logged, read from its JSON log.
type provisionAttempts struct {
	retries  []string // "what: err" of every retried attempt
	timeouts int      // those that failed because the attempt's deadline passed
}

func readProvisionLog(t *testing.T, log string) provisionAttempts {
	t.Helper()
	var pa provisionAttempts
	for line := range strings.Lines(log) {
		var rec struct {
			Msg, What, Err string
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if !strings.HasPrefix(rec.Msg, "provisioning failed; retrying") {
			continue
		}
		pa.retries = append(pa.retries, rec.What+": "+rec.Err)
		if strings.Contains(rec.Err, "deadline exceeded") || strings.Contains(rec.Err, "timeout") {
			pa.timeouts++
		}
	}
	return pa
}

// TestProvisionConcurrentlyOnAFreshCluster: a fleet started all at once on a fresh 3-node
// cluster (two coordinators, three workers, two shippers, replicas 3) provisions every stream
// and bucket without a single create-or-update attempt timing out, and then creates the workers'
// consumer. Before, nearly every process waited out a whole attempt (10 s) for a stream or
// bucket (in the chaos suite, whose processes stay in step, for every one of them): nats.go's
// CreateOrUpdateStream asks for an update first, and nats-server 2.15 does not answer an update
// of a replicated stream whose create another process has in flight (see createOrUpdateStream).
func TestProvisionConcurrentlyOnAFreshCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	urls := startCluster(t)
	const processes = 7
	logs := make([]*logtest.Buffer, processes)
	buses := make([]*bus.Bus, processes)
	for i := range processes {
		logs[i] = &logtest.Buffer{}
		b, err := bus.Connect(t.Context(), config.NATS{URL: urls, Replicas: 3, StoreDir: t.TempDir()}, bus.Options{
			Name:   fmt.Sprintf("provisioner-%d", i),
			Logger: slog.New(slog.NewJSONHandler(logs[i], nil)),
		})
		if err != nil {
			t.Fatalf("connecting process %d: %v", i, err)
		}
		t.Cleanup(b.Close)
		buses[i] = b
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	errs := make([]error, processes)
	var wg sync.WaitGroup
	start := time.Now()
	for i, b := range buses {
		wg.Go(func() { errs[i] = b.Provision(ctx, bus.Settings{LeaseTTL: 10 * time.Second, DedupeTTL: time.Hour}) })
	}
	wg.Wait()
	t.Logf("%d processes provisioned in %s", processes, time.Since(start)) // for the reader; not asserted
	for i, err := range errs {
		if err != nil {
			t.Errorf("process %d: Provision: %v", i, err)
		}
	}
	for i, log := range logs {
		pa := readProvisionLog(t, log.String())
		if pa.timeouts > 0 {
			t.Errorf("process %d: %d provisioning attempts timed out; retries: %q", i, pa.timeouts, pa.retries)
		} else if len(pa.retries) > 0 {
			// A cluster may still refuse for a moment (503) on a loaded machine; that is what
			// the retries are for, and costs a fraction of a second, not an attempt's deadline.
			t.Logf("process %d retried (no timeout): %q", i, pa.retries)
		}
	}
	// The workers then create their shared consumer on the new work stream, also at once.
	for i, b := range buses {
		wg.Go(func() {
			if _, err := b.WorkConsumer(ctx, time.Minute); err != nil {
				t.Errorf("process %d: WorkConsumer: %v", i, err)
			}
		})
	}
	wg.Wait()
	// Every resource exists, replicated three times (a bucket is the stream KV_<bucket>).
	names := []string{proto.StreamWork, proto.StreamResults}
	for _, bucket := range []string{proto.BucketPlan, proto.BucketDelivered, proto.BucketDedupe, proto.BucketLeases,
		proto.BucketFailed, proto.BucketWorkers, proto.BucketRate} {
		names = append(names, "KV_"+bucket)
	}
	for _, name := range names {
		s, err := buses[processes-1].JS.Stream(ctx, name)
		if err != nil {
			t.Errorf("stream %s: %v", name, err)
			continue
		}
		if r := s.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, r)
		}
	}
}
