package bustest_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/dtfleet/dtfleet/internal/bustest"
	"github.com/dtfleet/dtfleet/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNewIsProvisionedAndReachable: the bus New returns has every bucket a role opens, and its
// server is reachable from a second connection on its random port (as another process would).
func TestNewIsProvisionedAndReachable(t *testing.T) {
	b := bustest.New(t)
	ctx := context.Background()
	for _, bucket := range []string{proto.BucketPlan, proto.BucketDelivered, proto.BucketDedupe, proto.BucketLeases,
		proto.BucketFailed, proto.BucketWorkers, proto.BucketRate} {
		if _, err := b.KV(ctx, bucket); err != nil {
			t.Errorf("KV(%s) = %v", bucket, err)
		}
	}
	if b.ClientURL == "" {
		t.Fatal("ClientURL is empty: the embedded server does not listen")
	}
	nc, err := nats.Connect(b.ClientURL, b.ClientOptions()...)
	if err != nil {
		t.Fatalf("connecting to %s: %v", b.ClientURL, err)
	}
	defer nc.Close()
	if err := nc.Flush(); err != nil {
		t.Fatalf("flushing the second connection: %v", err)
	}
}
