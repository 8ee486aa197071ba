package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/shipper/devo"
)

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCluster starts a 3-node JetStream cluster in this process and waits until it has a
// meta leader. Its servers fsync every write, like deployments/nats/*.conf.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	var srvs []*server.Server
	for i, p := range ports {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true,
			JetStreamMaxMemory: 256 << 20, JetStreamMaxStore: 1 << 40,
			Cluster: server.ClusterOpts{Name: "dtfleet-test", Host: "127.0.0.1", Port: p},
			Routes:  routes,
			NoLog:   true, NoSigs: true,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		srvs = append(srvs, s)
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ready := 0
		for _, s := range srvs {
			if s.ReadyForConnections(10*time.Millisecond) && s.JetStreamIsClustered() && s.JetStreamIsCurrent() {
				ready++
			}
		}
		leader := false
		for _, s := range srvs {
			leader = leader || s.JetStreamIsLeader()
		}
		if ready == len(srvs) && leader {
			return srvs
		}
		if time.Now().After(deadline) {
			t.Fatal("the NATS cluster did not form")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClusterNodeLoss: DESIGN.md guarantee 1 on a 3-node cluster with replicas 3 — a node lost
// in the middle of a backfill loses no event and repeats none.
func TestClusterNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	srvs := startCluster(t)
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
