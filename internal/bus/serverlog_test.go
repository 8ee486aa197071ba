package bus_test

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
)

// logBuf collects a logger's JSON lines; safe for the NATS handlers' goroutines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) has(s string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), s)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuf) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !b.has(s) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q within 30s; log:\n%s", s, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConnectionEventsAndServerLogsReachTheLog stops and restarts an embedded server under a
// client connected through its listener: the client logs the disconnect and the reconnect, and
// the server's own log lines arrive through slog, tagged component=nats-server.
func TestConnectionEventsAndServerLogsReachTheLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	srvCfg := config.NATS{StoreDir: t.TempDir(), Listen: addr}
	var srvLog, cliLog logBuf
	srvLogger := slog.New(slog.NewJSONHandler(&srvLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := bus.Connect(t.Context(), srvCfg, bus.Options{Logger: srvLogger})
	if err != nil {
		t.Fatal(err)
	}
	if !srvLog.has(`"component":"nats-server"`) || !srvLog.has("Server is ready") {
		srv.Close()
		t.Fatalf("the embedded server's own log lines did not reach slog:\n%s", srvLog.String())
	}
	cli, err := bus.Connect(t.Context(), config.NATS{URL: "nats://" + addr}, bus.Options{JoinStore: srvCfg.StoreDir, Logger: slog.New(slog.NewJSONHandler(&cliLog, nil))})
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	defer cli.Close() // on failure; Close twice is harmless
	srv.Close()
	cliLog.waitFor(t, "NATS disconnected; reconnecting")
	srv, err = bus.Connect(t.Context(), srvCfg, bus.Options{Logger: srvLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cliLog.waitFor(t, "NATS reconnected")
	cli.Close() // before the server, so that it does not reconnect in vain
}
