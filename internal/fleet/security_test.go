package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/dtfleet/dtfleet/internal/logtest"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/metrics"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/shipper/devo/devotest"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// TestNoSecretLeaks runs a short fleet with known secret values (the Darktrace private token, a
// configured NATS password, the Devo HTTP token, and the embedded server's generated password)
// through its error paths (Devo refusing, a slot that fails for good, a client with a wrong
// password), then captures every place a secret could end up: the debug log, the errors, the
// /metrics text, every message of every stream and bucket (keys, headers and decompressed
// bodies) and the files of the store, and finds none of the secrets in any of them.
func TestNoSecretLeaks(t *testing.T) {
	const (
		dtToken      = "dtPrivSECRET4a8f0c2e6b1d9"
		devoToken    = "devoTokSECRET7e3b5d9f1a2c"
		natsPassword = "natsPwSECRET2c6e0a4b8d3f"
	)
	env := fleettest.NewEnv(t, 1)
	fake := darktracetest.NewServer(darktracetest.Options{Seed: 7, Start: env.Start, End: env.End, EventSize: 800, PrivateToken: dtToken})
	t.Cleanup(fake.Close)
	env.Fake = fake
	in := env.File.Inputs["darktrace"]
	in.Credentials.PrivateToken, in.Credentials.Instance = dtToken, fake.URL
	env.File.Inputs["darktrace"] = in
	env.Reload(t)

	sink, err := devotest.NewServer(devotest.Options{HTTPAddr: "127.0.0.1:0", HTTPToken: devoToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	cfg := env.Config
	cfg.Outputs = map[string]config.Output{"http_1": {Type: config.OutputHTTP,
		Config: config.OutputConfig{URL: sink.HTTPURL(), Domain: "dtfleet", Token: config.Secret(devoToken)}}}
	// A password the embedded server does not use, but the process holds: it must not leak either.
	cfg.NATS.User, cfg.NATS.Password = "dtfleet-ops", config.Secret(natsPassword)

	// A slot that fails for good leaves a failure record with its error in the failed bucket.
	bad := env.Start.Add(2 * time.Hour)
	fake.SetInputError(config.ServiceIncidentEvents, bad, bad.Add(time.Hour), true)
	// Devo refuses at first: the shipper logs and retries its errors.
	sink.Refuse(true)

	var logs logtest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := metrics.NewRegistry()
	metricsAddr := make(chan string, 1)
	// Every message published on the bus while the fleet runs (the shipper deletes the results
	// it delivered, so the streams alone would miss them): work items, result chunks, markers,
	// key-value writes, JetStream API requests and replies.
	var traffic logtest.Buffer
	var results atomic.Int64
	onBus := func(b *bus.Bus) {
		_, err := b.NC.Subscribe(">", func(m *nats.Msg) {
			body := m.Data
			if m.Header.Get(proto.HeaderEncoding) == proto.EncodingS2 {
				if d, err := s2.Decode(nil, m.Data); err == nil {
					body = d
				} else {
					body = []byte("undecodable S2 body")
				}
			}
			if strings.HasPrefix(m.Subject, "dtf.result.") {
				results.Add(1)
			}
			fmt.Fprintf(&traffic, "%s %v %s\n", m.Subject, m.Header, body)
		})
		if err != nil {
			t.Errorf("subscribing to the bus: %v", err)
		}
	}
	f := fleettest.Start(t, fleet.Fleet{Config: cfg,
		Deps:      fleet.Dependencies{Logger: logger, Registerer: reg, Gatherer: reg},
		Overrides: fleet.Overrides{Listen: "127.0.0.1:-1", MetricsListen: "127.0.0.1:0"},
		Hooks:     fleet.Hooks{OnMetrics: func(addr string) { metricsAddr <- addr }, OnBus: onBus},
	})
	generated, err := bus.ReadCredentials(cfg.NATS.StoreDir)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{"Darktrace private token": dtToken, "Devo HTTP token": devoToken,
		"NATS password": natsPassword, "embedded server password": generated.Password.Reveal()}

	waitUntil(t, time.Minute, "the shipper to log a refused delivery", func() bool {
		return strings.Contains(logs.String(), "Service Unavailable")
	})
	sink.Refuse(false)
	fleettest.WaitCaughtUp(t, f.Bus, cfg, env.End, 3*time.Minute)
	if sink.Count() == 0 {
		t.Fatal("the fake Devo received nothing; the test proves nothing")
	}

	var captured []string // every text a secret must not be in, labelled
	add := func(what, text string) { captured = append(captured, what+"\n"+text) }

	// Errors: a client with a wrong password, the fleet's failure record, the fleet's own result.
	if nc, err := nats.Connect(f.Bus.ClientURL, nats.UserInfo(generated.User, natsPassword)); err == nil {
		nc.Close()
		t.Fatal("a wrong password was accepted by the embedded listener")
	} else {
		add("wrong-password error", fmt.Sprintf("%v %+v", err, err))
	}
	_, err = bus.Connect(t.Context(), config.NATS{URL: f.Bus.ClientURL, StoreDir: t.TempDir()}, bus.Options{})
	if err == nil {
		t.Fatal("a client without the store's credentials joined the embedded server")
	}
	add("join error", fmt.Sprintf("%v %+v", err, err))
	st, err := f.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Failed) == 0 {
		t.Fatal("no failure record; the test proves nothing about them")
	}
	add("status", fmt.Sprintf("%+v", st))

	// Metrics, as Prometheus scrapes them.
	add("/metrics", scrape(t, <-metricsAddr))

	// Every message of every stream; the buckets are streams too (KV_<bucket>).
	add("streams", dumpStreams(t, f.Bus.JS))
	if results.Load() == 0 {
		t.Fatal("no result chunk was seen on the bus; the test proves nothing")
	}
	add("bus traffic", traffic.String())

	if err := f.Stop(); err != nil && !errors.Is(err, context.Canceled) {
		add("fleet error", fmt.Sprintf("%v %+v", err, err))
	}
	add("log", logs.String())
	if !strings.Contains(logs.String(), "embedded NATS started") {
		t.Fatal("the log capture missed the fleet's log; the test proves nothing")
	}

	// The store's files, but for the credentials file that holds the generated password by design.
	err = filepath.WalkDir(cfg.NATS.StoreDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == bus.AuthFile {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		add("store file "+path, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	for _, text := range captured {
		for name, secret := range secrets {
			if strings.Contains(text, secret) {
				what, _, _ := strings.Cut(text, "\n")
				t.Errorf("the %s appears in %s", name, what)
			}
		}
	}
}

// waitUntil polls cond until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrape returns the /metrics text served on addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	if !strings.Contains(string(b), "dtfleet_") {
		t.Fatalf("/metrics shows no dtfleet metric; the test proves nothing:\n%s", b)
	}
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	return string(b)
}

// dumpStreams returns every stored message of every stream: subject, headers and body, the
// body decompressed when it is an S2 chunk.
func dumpStreams(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var out strings.Builder
	names := js.StreamNames(ctx)
	seen := map[string]bool{}
	for name := range names.Name() {
		seen[name] = true
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // deleted: acknowledged work, expired or overwritten keys
			}
			if err != nil {
				t.Fatalf("reading %s message %d: %v", name, seq, err)
			}
			body := m.Data
			if m.Header.Get(proto.HeaderEncoding) == proto.EncodingS2 {
				if body, err = s2.Decode(nil, m.Data); err != nil {
					t.Fatalf("decompressing %s message %d: %v", name, seq, err)
				}
			}
			fmt.Fprintf(&out, "%s %d %s %v %s\n", name, seq, m.Subject, m.Header, body)
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{proto.StreamResults, "KV_" + proto.BucketFailed, "KV_" + proto.BucketDedupe, "KV_" + proto.BucketDelivered} {
		if !seen[want] {
			t.Fatalf("stream %s not listed (listed: %v)", want, seen)
		}
	}
	return out.String()
}

// TestRoleJoinsEmbeddedWithStoreCredentials: a role process and a short-lived command (status,
// replay, failed) with the configuration of a running `dtfleet run` join its embedded server
// through the listener with the credentials in the shared store directory; a process whose
// store directory lacks them is refused by the server, with a message that says where they are.
func TestRoleJoinsEmbeddedWithStoreCredentials(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	env.File.NATS.Listen = addr
	env.Reload(t)
	fleettest.Start(t, fleet.Fleet{Config: env.Config, Overrides: fleet.Overrides{Listen: addr}})

	logger := fleettest.Logger(t)
	worker, err := fleet.Connect(t.Context(), env.Config, fleet.Roles{Worker: true}, "", logger)
	if err != nil {
		t.Fatalf("a worker sharing the store directory: %v", err)
	}
	worker.Close()
	client, err := fleet.ConnectClient(t.Context(), env.Config, logger)
	if err != nil {
		t.Fatalf("a command sharing the store directory: %v", err)
	}
	if client.Embedded() {
		t.Error("the command opened a store of its own instead of joining the running server")
	}
	client.Close()

	other := *env.Config
	other.NATS.StoreDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(other.NATS.StoreDir, bus.AuthFile), []byte(`{"user":"dtfleet","password":"guess"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = fleet.Connect(t.Context(), &other, fleet.Roles{Worker: true}, "", logger)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("a worker with other credentials: %v, want an authorization violation", err)
	}
	other.NATS.StoreDir = t.TempDir()
	_, err = fleet.Connect(t.Context(), &other, fleet.Roles{Worker: true}, "", logger)
	if err == nil || !strings.Contains(err.Error(), bus.AuthFile) {
		t.Fatalf("a worker with no credentials: %v, want an error naming %s", err, bus.AuthFile)
	}
}
