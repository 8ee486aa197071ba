package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/config"
	"github.com/dtfleet/dtfleet/internal/fleet"
	"github.com/dtfleet/dtfleet/internal/fleet/fleettest"
	"github.com/dtfleet/dtfleet/internal/status"
	"github.com/dtfleet/dtfleet/proto"
	"github.com/dtfleet/dtfleet/worker/darktrace/darktracetest"
)

// TestFailedReplayCommandClears puts a failure record whose window has milliseconds (as a slot
// planned from look_back_in_minutes has) next to a running fleet, takes the replay command that
// `failed list` prints for it, runs it, and checks that the delivered replay clears the record;
// then checks `failed clear` on a second record.
func TestFailedReplayCommandClears(t *testing.T) {
	env := fleettest.NewEnv(t, 1)
	addr := freeAddr(t)
	env.File.NATS.Listen = addr
	env.Reload(t)
	f := fleettest.Start(t, fleet.Fleet{Config: env.Config, Overrides: fleet.Overrides{Listen: addr}})
	fleettest.WaitCaughtUp(t, f.Bus, env.Config, env.End, 3*time.Minute)
	// The commands get a configuration whose private token comes from an unset variable: they
	// must not need it.
	cfgPath := noSecretConfig(t, env.Dir)
	checkStatus(t, cfgPath, status.CheckHealthy, "6h")
	kv, err := f.Bus.KV(t.Context(), proto.BucketFailed)
	if err != nil {
		t.Fatal(err)
	}
	put := func(service string, start, end int64) {
		rec := proto.Failure{V: proto.SchemaVersion, Input: "darktrace", Service: service, Seq: 1, Start: start, End: end,
			Error: "PullError(300): INPUT ERROR", At: time.Now().UnixMilli()}
		data, err := proto.Encode(&rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(t.Context(), proto.FailedKey(rec.Input, service, start, end), data); err != nil {
			t.Fatal(err)
		}
	}
	start := env.Start.Add(3*time.Hour + 1234*time.Millisecond).UnixMilli()
	put(config.ServiceModelBreaches, start, start+20*60*1000+5)
	put(config.ServiceAntigena, start, start+1000)

	checkStatus(t, cfgPath, status.CheckFailed, "6h")
	out, _, err := executeDT(t, "failed", "list", "-c", cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var replay string
	for l := range strings.Lines(out) {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "dtfleet replay") && strings.Contains(l, config.ServiceModelBreaches) {
			replay = l
		}
	}
	if !strings.Contains(replay, "--from "+proto.FormatMSExact(start)) || !strings.Contains(replay, ".234Z") {
		t.Fatalf("failed list prints no exact replay command for the record:\n%s", out)
	}
	args := append(strings.Fields(replay)[1:], "-c", cfgPath)
	if out, _, err := executeDT(t, args...); err != nil || !strings.Contains(out, "republished 1 slots") {
		t.Fatalf("%s: %v, %q", replay, err, out)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := f.WaitFor(ctx, func(st *status.Status) bool {
		return len(st.Failed) == 1 && st.Failed[0].Service == config.ServiceAntigena
	}); err != nil {
		t.Fatalf("the replay did not clear the modelbreaches record: %v", err)
	}

	if _, _, err := executeDT(t, "failed", "clear", "-c", cfgPath); err == nil {
		t.Error("failed clear without a selector cleared something")
	}
	out, _, err = executeDT(t, "failed", "clear", "-c", cfgPath, "--service", config.ServiceAntigena)
	if err != nil || !strings.Contains(out, "cleared 1 failure record(s)") {
		t.Fatalf("failed clear: %v, %q", err, out)
	}
	if fs, err := status.ListFailed(t.Context(), f.Bus); err != nil || len(fs) != 0 {
		t.Fatalf("after failed clear: %+v, %v", fs, err)
	}
	// The replayed slot moved the delivery checkpoint back to its window until the next planned
	// slot is delivered, so the lane lags by a day for a while: allow that.
	checkStatus(t, cfgPath, status.CheckHealthy, "48h")
	out, _, err = executeDT(t, "status", "-c", cfgPath)
	if host, _ := os.Hostname(); err != nil || !strings.Contains(out, fmt.Sprintf("(host %s pid %d)", host, os.Getpid())) {
		t.Errorf("status does not say where the leaders run: %v\n%s", err, out)
	}
	bad := strings.Replace(cfgPath, ".yaml", "-unreachable.yaml", 1)
	unreachable := env.File
	unreachable.NATS = fleet.FileNATS{URL: "nats://127.0.0.1:1"}
	if _, err := unreachable.Load(bad); err != nil {
		t.Fatal(err)
	}
	checkStatus(t, bad, status.CheckUnreachable, "6h")
}

// checkStatus runs `dtfleet status --check` and requires exit status want.
func checkStatus(t *testing.T, cfgPath string, want int, maxLag string) {
	t.Helper()
	out, _, err := executeDT(t, "status", "--check", "--max-lag", maxLag, "-c", cfgPath)
	code := 0
	if err != nil {
		var ee *exitError
		if !errors.As(err, &ee) {
			t.Fatalf("status --check: %v", err)
		}
		code = ee.code
	}
	if code != want {
		t.Errorf("status --check exited %d, want %d: %v\n%s", code, want, err, out)
	}
}

// noSecretConfig copies dir/config.yaml with the private token replaced by an unset variable.
func noSecretConfig(t *testing.T, dir string) string {
	t.Helper()
	y := strings.Replace(readFile(t, filepath.Join(dir, "config.yaml")), darktracetest.DefaultPrivateToken, "${DTFLEET_TEST_UNSET_PRIVATE_TOKEN}", 1)
	if !strings.Contains(y, "${DTFLEET_TEST_UNSET_PRIVATE_TOKEN}") {
		t.Fatal("the configuration holds no private token to replace")
	}
	path := filepath.Join(dir, "no-secret.yaml")
	writeFile(t, path, y)
	return path
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
