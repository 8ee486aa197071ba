// Package bustest starts an embedded JetStream server for tests: one per test, on a random
// loopback port and a temporary store, provisioned like a real fleet's bus and stopped when the
// test ends. Every package that needs a bus in its tests uses it instead of its own copy.
package bustest

import (
	"context"
	"testing"
	"time"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
)

// Settings are the bus settings New provisions with: a short lease TTL, so that tests of
// fail-over do not wait long, and a dedupe TTL long enough to outlast any test.
var Settings = bus.Settings{LeaseTTL: 2 * time.Second, DedupeTTL: time.Hour}

// New starts an embedded JetStream server provisioned with Settings and returns its bus; the
// bus's NC and JS are the connection and JetStream context, and ClientURL reaches the server from
// another connection. The server and its store are removed when the test ends.
func New(t testing.TB) *bus.Bus {
	t.Helper()
	return NewWith(t, Settings)
}

// NewWith is New with other settings (a lease test chooses its bucket's TTL).
func NewWith(t testing.TB, s bus.Settings) *bus.Bus {
	t.Helper()
	return newBus(t, s, 0)
}

// NewWithMaxStore is New on a server whose JetStream file storage is capped at maxStore bytes
// (bus.Options.MaxStore). The results stream reserves its MaxBytes (8 GiB) of it, so a cap a few
// MiB above that leaves the buckets a few MiB: a test can fill the storage.
func NewWithMaxStore(t testing.TB, maxStore int64) *bus.Bus {
	t.Helper()
	return newBus(t, Settings, maxStore)
}

func newBus(t testing.TB, s bus.Settings, maxStore int64) *bus.Bus {
	t.Helper()
	ctx := context.Background()
	// TempDir's removal is registered first, so it runs after Close (cleanups run last-in first-out).
	b, err := bus.Connect(ctx, config.NATS{StoreDir: t.TempDir()}, bus.Options{Name: t.Name(), ListenOverride: "127.0.0.1:-1", MaxStore: maxStore})
	if err != nil {
		t.Fatalf("starting an embedded JetStream server: %v", err)
	}
	t.Cleanup(b.Close)
	if err := b.Provision(ctx, s); err != nil {
		t.Fatalf("provisioning the test bus: %v", err)
	}
	return b
}
