package chaos

// The processes of the suite: the dtfleet and nats-server binaries (built once per test binary),
// one OS process per role or NATS node, and a supervisor that restarts what the suite killed
// and records what exited without being killed.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/proto"
)

// binaries are the programs the suite runs, built once per test binary (without -race: the
// child processes are the system under test, not the race detector's subject).
var binaries struct {
	once        sync.Once
	dir         string
	dtfleet     string
	natsServer  string
	err         error
	buildPeriod time.Duration
}

// buildBinaries builds cmd/dtfleet and nats-server (from the module in go.mod, offline from the
// module cache) and returns their paths.
func buildBinaries(t *testing.T) (dtfleet, natsServer string) {
	t.Helper()
	binaries.once.Do(func() {
		began := time.Now()
		dir, err := os.MkdirTemp("", "dtfleet-chaos-")
		if err != nil {
			binaries.err = err
			return
		}
		binaries.dir = dir
		goBin, err := exec.LookPath("go")
		if err != nil {
			binaries.err = fmt.Errorf("finding the go command: %w", err)
			return
		}
		for _, b := range []struct {
			out *string
			pkg string
		}{
			{&binaries.dtfleet, "github.com/dtfleet/dtfleet/cmd/dtfleet"},
			{&binaries.natsServer, "github.com/nats-io/nats-server/v2"},
		} {
			path := filepath.Join(dir, filepath.Base(strings.TrimSuffix(b.pkg, "/v2")))
			out, err := exec.Command(goBin, "build", "-o", path, b.pkg).CombinedOutput()
			if err != nil {
				binaries.err = fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
				return
			}
			*b.out = path
		}
		binaries.buildPeriod = time.Since(began)
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
	return binaries.dtfleet, binaries.natsServer
}

// proc is one incarnation of a child process. Its stdout and stderr go to its own log file.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	done   chan struct{}
	err    error // Wait's result, once done is closed
	killed bool  // the suite sent it SIGKILL or SIGTERM
}

// startProc starts bin with args in dir, logging to dir/<name>.log, with the test's environment
// plus env (KEY=value). The process is killed and waited for in t.Cleanup if the test did not
// stop it.
func startProc(t *testing.T, dir, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = lf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig and waits for the process to exit. The deadline only catches a process that
// hangs: it is killed then and an error is returned.
func (p *proc) signal(sig syscall.Signal, within time.Duration) error {
	p.killed = true
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		return fmt.Errorf("signalling %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		if sig == syscall.SIGTERM && p.err != nil {
			return fmt.Errorf("%s after SIGTERM: %w (want exit status 0)", p.name, p.err)
		}
		return nil
	case <-time.After(within):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of %v", p.name, within, sig)
	}
}

// logged counts the log lines that contain every one of parts (JSON logs: `"msg":"..."` and
// `"service":"..."` fragments work).
func (p *proc) logged(parts ...string) int {
	b, _ := os.ReadFile(p.log)
	n := 0
	for line := range bytes.Lines(b) {
		ok := true
		for _, s := range parts {
			if !bytes.Contains(line, []byte(s)) {
				ok = false
				break
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// tail returns the last n bytes of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// member is one supervised process slot (a role or a NATS node): its current incarnation and
// how to start the next one. Like systemd's Restart=always, the suite restarts a member that
// exited; an exit the suite did not cause is recorded as unexpected.
type member struct {
	name   string
	bin    string
	args   []string
	env    []string // added to the environment of the next incarnations (KEY=value)
	dir    string
	n      int // incarnations started
	cur    *proc
	all    []*proc // every incarnation, cur included
	kills  int
	exits  []string // unexpected exits: the error and the log's tail
	t      *testing.T
	sticky bool // not restarted by supervise (a NATS node the suite restarts itself)
}

func (m *member) start() {
	m.n++
	m.cur = startProc(m.t, m.dir, fmt.Sprintf("%s.%d", m.name, m.n), m.env, m.bin, m.args...)
	m.all = append(m.all, m.cur)
}

// logged counts the log lines of every incarnation that contain every one of parts.
func (m *member) logged(parts ...string) int {
	n := 0
	for _, p := range m.all {
		n += p.logged(parts...)
	}
	return n
}

// supervise restarts the member if its process exited, recording an exit the suite did not
// cause.
func (m *member) supervise() {
	if m.sticky || m.cur == nil || !m.cur.exited() {
		return
	}
	if !m.cur.killed {
		m.exits = append(m.exits, fmt.Sprintf("%s exited by itself (%v); log tail:\n%s", m.cur.name, m.cur.err, m.cur.tail(3000)))
		m.t.Logf("UNEXPECTED EXIT of %s: %v (restarted, as a service manager would)", m.cur.name, m.cur.err)
	}
	m.start()
}

// kill sends SIGKILL to the member's process and starts it again.
func (m *member) kill() error {
	if err := m.cur.signal(syscall.SIGKILL, 30*time.Second); err != nil {
		return err
	}
	m.kills++
	m.start()
	return nil
}

// cluster is a 3-node JetStream cluster of nats-server processes, each with its own store
// directory and fsync on every write.
type cluster struct {
	nodes []*member
	urls  []string
}

// startCluster writes the node configurations, starts the three servers and waits until the
// cluster has a JetStream meta leader.
func startCluster(t *testing.T, dir, natsServer string) *cluster {
	t.Helper()
	c := &cluster{}
	var clientPorts, routePorts []int
	for range 3 {
		clientPorts = append(clientPorts, bustest.FreePort(t))
		routePorts = append(routePorts, bustest.FreePort(t))
	}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		store := filepath.Join(dir, name+"-store")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream {
  store_dir: %q
  sync_interval: always
  max_memory_store: 256MB
  max_file_store: 20GB
}
cluster {
  name: dtfleet-chaos
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, name, clientPorts[i], store, routePorts[i], strings.Join(routes, ", "))
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		m := &member{name: "nats-" + name, bin: natsServer, args: []string{"-c", path}, dir: dir, t: t, sticky: true}
		m.start()
		c.nodes = append(c.nodes, m)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
	}
	nc := c.connect(t)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 90*time.Second, "the NATS cluster to elect a JetStream meta leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
	return c
}

// connect connects the test to the cluster (any node).
func (c *cluster) connect(t *testing.T) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(strings.Join(c.urls, ","), nats.Name("dtfleet-chaos-test"), nats.MaxReconnects(-1),
		nats.ReconnectWait(200*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// resultsLeader returns the name of the node leading the results stream ("" when it cannot be
// read right now, for example during an election).
func resultsLeader(js jetstream.JetStream) string {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, proto.StreamResults)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

// node returns the member running the node named name (n1, n2, n3).
func (c *cluster) node(name string) *member {
	for _, m := range c.nodes {
		if m.name == "nats-"+name {
			return m
		}
	}
	return nil
}

// waitUntil polls cond until it holds, or fails the test after timeout. Polling a condition
// with a deadline is how the suite waits; it never sleeps a fixed time.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := pollUntil(timeout, cond, nil); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// pollUntil polls cond every 100 ms until it holds, calling each (when set) between polls, and
// returns an error after timeout.
func pollUntil(timeout time.Duration, cond func() bool, each func()) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out after " + timeout.String())
		}
		<-tick.C
		if each != nil {
			each()
		}
	}
	return nil
}
