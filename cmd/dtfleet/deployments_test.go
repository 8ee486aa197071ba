package main

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/dtfleet/dtfleet/internal/config"
)

// TestDeploymentFiles keeps deployments/ honest: every example configuration validates, and every
// NATS server configuration parses with JetStream and fsync on every write (the durability the
// checkpoints rely on).
func TestDeploymentFiles(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DT_PUBLIC_TOKEN": "public", "DT_PRIVATE_TOKEN": "private"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	yamls, err := filepath.Glob("../../deployments/*.yaml")
	if err != nil || len(yamls) < 2 {
		t.Fatalf("deployment configs: %v %v", yamls, err)
	}
	for _, p := range yamls {
		if _, err := config.Load(p, config.LoadOptions{LookupEnv: lookup}); err != nil {
			t.Errorf("%s does not validate: %v", p, err)
		}
	}
	confs, err := filepath.Glob("../../deployments/nats/*.conf")
	if err != nil || len(confs) != 3 {
		t.Fatalf("NATS configs: %v %v", confs, err)
	}
	for _, p := range confs {
		opts, err := server.ProcessConfigFile(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if !opts.JetStream || !opts.SyncAlways || len(opts.Routes) != 3 {
			t.Errorf("%s: jetstream=%v sync_always=%v routes=%d; want JetStream, sync always, 3 routes", p, opts.JetStream, opts.SyncAlways, len(opts.Routes))
		}
	}
}
