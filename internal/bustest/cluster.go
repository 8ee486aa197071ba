package bustest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster starts a fresh 3-node JetStream cluster in this process, fsyncing every write like
// deployments/nats/*.conf, and returns its servers once every node is current and one is the
// meta leader: the state a fleet's processes meet when they start. The servers are shut down
// when the test ends.
func Cluster(t testing.TB) []*server.Server {
	t.Helper()
	ports := []int{FreePort(t), FreePort(t), FreePort(t)}
	var routes []*url.URL
	for _, p := range ports {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	var srvs []*server.Server
	for i, p := range ports {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), SyncAlways: true,
			// A limit, not an allocation: the results stream reserves 8 GiB of it.
			JetStreamMaxMemory: 256 << 20, JetStreamMaxStore: 1 << 40,
			Cluster: server.ClusterOpts{Name: "dtfleet-test", Host: "127.0.0.1", Port: p},
			Routes:  routes,
			NoLog:   true, NoSigs: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		srvs = append(srvs, s)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ready, leader := 0, false
		for _, s := range srvs {
			if s.ReadyForConnections(10*time.Millisecond) && s.JetStreamIsClustered() && s.JetStreamIsCurrent() {
				ready++
			}
			leader = leader || s.JetStreamIsLeader()
		}
		if ready == len(srvs) && leader {
			return srvs
		}
		if time.Now().After(deadline) {
			t.Fatal("the NATS cluster did not form within a minute")
		}
		time.Sleep(20 * time.Millisecond) // polling the servers' state; there is nothing to wait on
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
