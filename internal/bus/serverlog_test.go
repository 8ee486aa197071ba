package bus_test

import (
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/logtest"
)

func has(b *logtest.Buffer, s string) bool { return strings.Contains(b.String(), s) }

func waitFor(t *testing.T, b *logtest.Buffer, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !has(b, s) {
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
	var srvLog, cliLog logtest.Buffer
	srvLogger := slog.New(slog.NewJSONHandler(&srvLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := bus.Connect(t.Context(), srvCfg, bus.Options{Logger: srvLogger})
	if err != nil {
		t.Fatal(err)
	}
	if !has(&srvLog, `"component":"nats-server"`) || !has(&srvLog, "Server is ready") {
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
	waitFor(t, &cliLog, "NATS disconnected; reconnecting")
	srv, err = bus.Connect(t.Context(), srvCfg, bus.Options{Logger: srvLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	waitFor(t, &cliLog, "NATS reconnected")
	cli.Close() // before the server, so that it does not reconnect in vain
}
