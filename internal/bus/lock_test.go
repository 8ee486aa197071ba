//go:build unix

package bus_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dtfleet/dtfleet/internal/bus"
	"github.com/dtfleet/dtfleet/internal/config"
)

// TestEmbeddedStoreIsLocked checks that a second embedded server on a store another one holds is
// refused with an error naming the store and the holder, and that closing the first frees it.
func TestEmbeddedStoreIsLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := config.NATS{StoreDir: dir, Listen: config.ListenNone}
	first, err := bus.Connect(t.Context(), cfg, bus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = bus.Connect(t.Context(), cfg, bus.Options{})
	var le *bus.StoreLockedError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		first.Close()
		t.Fatalf("second server on a held store: %v", err)
	}
	first.Close()
	again, err := bus.Connect(t.Context(), cfg, bus.Options{})
	if err != nil {
		t.Fatalf("the store stayed locked after the first server closed: %v", err)
	}
	again.Close()
}
