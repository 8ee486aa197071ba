package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerSource reads a JetStream consumer's state; jetstream.JetStream satisfies it.
type ConsumerSource interface {
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
}

// ConsumerCollector exports, at scrape time, how many messages the named durable consumers have
// not yet had acknowledged: those not delivered yet plus those delivered and awaiting their ack
// (dtfleet_jetstream_consumer_pending{stream,consumer}). A consumer that cannot be read makes the
// scrape fail for that series rather than show a stale value.
type ConsumerCollector struct {
	src       ConsumerSource
	consumers [][2]string // stream, consumer
	pending   *prometheus.Desc
}

// NewConsumerCollector returns a collector of the consumers given as {stream, consumer} pairs.
func NewConsumerCollector(src ConsumerSource, consumers ...[2]string) *ConsumerCollector {
	return &ConsumerCollector{src: src, consumers: consumers,
		pending: prometheus.NewDesc("dtfleet_jetstream_consumer_pending",
			"Messages of the stream the durable consumer has not had acknowledged (not yet delivered, or delivered and awaiting their ack).",
			[]string{"stream", "consumer"}, nil)}
}

// Describe implements prometheus.Collector.
func (c *ConsumerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.pending }

// Collect implements prometheus.Collector.
func (c *ConsumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, sc := range c.consumers {
		cons, err := c.src.Consumer(ctx, sc[0], sc[1])
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = cons.Info(ctx)
		}
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.pending, fmt.Errorf("reading consumer %s of stream %s: %w", sc[1], sc[0], err))
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending)+float64(info.NumAckPending), sc[0], sc[1])
	}
}
