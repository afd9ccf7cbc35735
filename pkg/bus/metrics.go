package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// ConsumerRef names a durable consumer whose lag a Collector reports.
type ConsumerRef struct {
	Stream, Durable string
}

// CollectorConfig says what a Collector reports.
type CollectorConfig struct {
	// Consumers: pending (lag), ack-pending and redelivered messages.
	Consumers []ConsumerRef
	// Streams: their depth in messages and bytes; the DLQ and SPOOL
	// streams are the ones an operator watches.
	Streams []string
	// Breakers, by state; nil reports none.
	Breakers []*Breakers
	// Timeout bounds the JetStream requests of one scrape (2s).
	Timeout time.Duration
}

// Collector exports the bus state of a service (DESIGN §8: consumer lag,
// redeliveries, DLQ and spool depth, breaker state) at scrape time, from
// JetStream's own consumer and stream info rather than counters kept on the
// hot path: the numbers are the server's, so they are right across
// restarts and replicas.
type Collector struct {
	js  jetstream.JetStream
	cfg CollectorConfig

	pending, ackPending, redelivered *prometheus.Desc
	streamMsgs, streamBytes          *prometheus.Desc
	breakers                         *prometheus.Desc
	scrapeErrors                     *prometheus.Desc
}

// NewCollector returns a Collector; register it with a prometheus.Registry.
func NewCollector(js jetstream.JetStream, cfg CollectorConfig) *Collector {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &Collector{js: js, cfg: cfg,
		pending:      d("bus_consumer_pending_messages", "Messages of the consumer's subjects not yet delivered (its lag).", "stream", "consumer"),
		ackPending:   d("bus_consumer_ack_pending_messages", "Messages delivered and not yet acknowledged.", "stream", "consumer"),
		redelivered:  d("bus_consumer_redelivered_messages", "Messages delivered more than once and not yet acknowledged.", "stream", "consumer"),
		streamMsgs:   d("bus_stream_messages", "Messages in the stream (for DLQ and SPOOL: dead letters and spooled payloads).", "stream"),
		streamBytes:  d("bus_stream_bytes", "Bytes in the stream.", "stream"),
		breakers:     d("bus_breakers", "Circuit breakers by state (closed, half-open, open).", "state"),
		scrapeErrors: d("bus_scrape_errors", "JetStream info requests of this scrape that failed (NATS away, consumer or stream missing).", "what"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.ackPending, c.redelivered, c.streamMsgs, c.streamBytes, c.breakers, c.scrapeErrors} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A consumer or stream whose info
// cannot be had is left out and counted in bus_scrape_errors, so a scrape
// during a NATS outage still returns the rest.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	var consumerErrs, streamErrs int
	for _, ref := range c.cfg.Consumers {
		cons, err := c.js.Consumer(ctx, ref.Stream, ref.Durable)
		if err != nil {
			consumerErrs++
			continue
		}
		// Consumer has just fetched the info: one request per consumer.
		info := cons.CachedInfo()
		g(c.pending, float64(info.NumPending), ref.Stream, ref.Durable)
		g(c.ackPending, float64(info.NumAckPending), ref.Stream, ref.Durable)
		g(c.redelivered, float64(info.NumRedelivered), ref.Stream, ref.Durable)
	}
	for _, name := range c.cfg.Streams {
		st, err := c.js.Stream(ctx, name)
		if err != nil {
			streamErrs++
			continue
		}
		info := st.CachedInfo()
		g(c.streamMsgs, float64(info.State.Msgs), name)
		g(c.streamBytes, float64(info.State.Bytes), name)
	}
	if len(c.cfg.Breakers) > 0 {
		var counts [3]int
		for _, b := range c.cfg.Breakers {
			closed, half, open := b.Counts()
			counts[0] += closed
			counts[1] += half
			counts[2] += open
		}
		g(c.breakers, float64(counts[0]), gobreaker.StateClosed.String())
		g(c.breakers, float64(counts[1]), gobreaker.StateHalfOpen.String())
		g(c.breakers, float64(counts[2]), gobreaker.StateOpen.String())
	}
	g(c.scrapeErrors, float64(consumerErrs), "consumer")
	g(c.scrapeErrors, float64(streamErrs), "stream")
}

// Counts returns how many of the breakers are closed, half-open and open.
func (b *Breakers) Counts() (closed, halfOpen, open int) {
	b.mu.Lock()
	cbs := make([]*breaker, 0, len(b.m))
	for _, cb := range b.m {
		cbs = append(cbs, cb)
	}
	b.mu.Unlock()
	// State may move a breaker from open to half-open and call
	// OnStateChange, which takes b.mu: it runs without the lock.
	for _, cb := range cbs {
		switch cb.State() {
		case gobreaker.StateOpen:
			open++
		case gobreaker.StateHalfOpen:
			halfOpen++
		default:
			closed++
		}
	}
	return closed, halfOpen, open
}
