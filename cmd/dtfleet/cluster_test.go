package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// TestClusterNodeLoss: DESIGN.md guarantee 1 on a 3-node cluster with replicas 3 — a node lost
// in the middle of a backfill loses no event and repeats none.
func TestClusterNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	srvs := bustest.Cluster(t)
	var urls []string
	for _, s := range srvs {
		urls = append(urls, s.ClientURL())
	}
	env := fleettest.NewEnv(t, 2)
	env.File.NATS = fleet.FileNATS{URL: strings.Join(urls, ","), Replicas: 3}
	env.Reload(t)
	cfg := env.Config
	if cfg.NATS.URL == "" || cfg.NATS.Replicas != 3 {
		t.Fatalf("the test config does not use the cluster: %+v", cfg.NATS)
	}
	rec := fleettest.NewRecorder()
	f := fleettest.Start(t, fleet.Fleet{Config: cfg, Deps: fleet.Dependencies{Outputs: []devo.Output{rec}}})
	b := f.Bus
	tag := cfg.Inputs["darktrace"].Services[config.ServiceModelBreaches].Tag
	fleettest.WaitFor(t, b, cfg, 2*time.Minute, "progress on the cluster", func(*status.Status) bool { return len(rec.Events(tag)) >= 100 })
	// Lose the node the fleet is connected to: the client must fail over, and the streams and
	// buckets elect new leaders among the two that are left.
	victim := srvs[0]
	for _, s := range srvs {
		if s.ClientURL() == b.NC.ConnectedUrl() {
			victim = s
		}
	}
	before := len(rec.Events(tag))
	victim.Shutdown()
	victim.WaitForShutdown()
	t.Logf("shut down %s after %d model breaches were delivered", victim.Name(), before)
	fleettest.WaitCaughtUp(t, b, cfg, env.End, 4*time.Minute)
	fleettest.CheckExactlyOnce(t, env.Fake, cfg, rec.Events)
	if b.NC.Status() != nats.CONNECTED {
		t.Errorf("the fleet's connection is %v after the node loss", b.NC.Status())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.JS.AccountInfo(ctx); err != nil {
		t.Errorf("JetStream after the node loss: %v", err)
	}
}
