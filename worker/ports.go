package worker

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dtfleet/dtfleet/worker/darktrace"
)

// Fetcher fetches one request from an appliance and calls fn with each raw event in response
// order. *darktrace.Client implements it.
type Fetcher interface {
	Fetch(ctx context.Context, req darktrace.Request, fn func(raw []byte) error) (darktrace.Stats, error)
}

// lookupFetcher is a Fetcher that also finds top-level members while it splits a response, as
// *darktrace.Client does (see its FetchLookup); the worker uses it when a Fetcher has it, so an
// event is scanned once.
type lookupFetcher interface {
	FetchLookup(ctx context.Context, req darktrace.Request, names []string, fn func(raw []byte, vals [][]byte) error) (darktrace.Stats, error)
}

// WorkQueue opens the workers' shared durable pull consumer on the work stream, whose items are
// redelivered when not acknowledged (or in-progress acknowledged) within ackWait. Every worker
// of a fleet must pass the same ackWait. *bus.Bus implements it; the worker only calls Next on
// the consumer (see WorkSource).
type WorkQueue interface {
	WorkConsumer(ctx context.Context, ackWait time.Duration) (jetstream.Consumer, error)
}

// WorkSource hands out work items one at a time: Next waits up to its FetchMaxWait for one and
// returns nats.ErrTimeout or jetstream.ErrNoMessages when none came. jetstream.Consumer
// implements it.
type WorkSource interface {
	Next(opts ...jetstream.FetchOpt) (jetstream.Msg, error)
}

// ResultPublisher publishes to the results stream: result chunks asynchronously (the future
// resolves once the stream stored the chunk), done markers synchronously. Both honour
// jetstream.WithMsgID, so a repeated publish within the stream's duplicate window is stored once.
// jetstream.JetStream implements it.
type ResultPublisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
	Publish(ctx context.Context, subject string, payload []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// RecordStore is a KV bucket the worker writes records to and deletes them from (failure
// records, heartbeats). jetstream.KeyValue implements it.
type RecordStore interface {
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
}

// Endpoints are the parts of the bus a worker uses.
type Endpoints struct {
	Work       WorkQueue
	Results    ResultPublisher
	Failures   RecordStore // the failed-slots bucket (proto.BucketFailed)
	Heartbeats RecordStore // the heartbeats bucket (proto.BucketWorkers), whose TTL expires dead workers
	// Rate is the fleet-wide rate-reservation bucket (proto.BucketRate); only used, and then
	// required, when Options.Fetchers is nil.
	Rate RateStore
	// MaxPayload is the server's largest message in bytes; result chunks are cut to fit it.
	MaxPayload int
}
