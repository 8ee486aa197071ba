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

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
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
	env := newFleetEnv(t, 2, "")
	cfg, err := config.Parse([]byte(strings.Replace(env.yaml, "nats: {store_dir: "+env.dir+"/data, listen: none}",
		fmt.Sprintf("nats: {url: %q, replicas: 3}", strings.Join(urls, ",")), 1)), config.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.URL == "" || cfg.NATS.Replicas != 3 {
		t.Fatalf("the test config does not use the cluster: %+v", cfg.NATS)
	}
	env.cfg = cfg
	rec := newRecorder()
	stop, busc := startFleet(t, cfg, fleetOptions{outputs: []devo.Output{rec}})
	var b *bus.Bus
	select {
	case b = <-busc:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the fleet did not start on the cluster: %v", stop())
	}
	tag := cfg.Inputs["darktrace"].Services[config.ServiceModelBreaches].Tag
	deadline := time.Now().Add(2 * time.Minute)
	for len(rec.events(tag)) < 100 {
		if time.Now().After(deadline) {
			t.Fatal("no progress on the cluster")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Lose the node the fleet is connected to: the client must fail over, and the streams and
	// buckets elect new leaders among the two that are left.
	victim := srvs[0]
	for _, s := range srvs {
		if s.ClientURL() == b.NC.ConnectedUrl() {
			victim = s
		}
	}
	before := len(rec.events(tag))
	victim.Shutdown()
	victim.WaitForShutdown()
	t.Logf("shut down %s after %d model breaches were delivered", victim.Name(), before)
	waitCaughtUp(t, b, cfg, env.end, 4*time.Minute)
	checkExactlyOnce(t, env, rec.events)
	if b.NC.Status() != nats.CONNECTED {
		t.Errorf("the fleet's connection is %v after the node loss", b.NC.Status())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.JS.AccountInfo(ctx); err != nil {
		t.Errorf("JetStream after the node loss: %v", err)
	}
}
