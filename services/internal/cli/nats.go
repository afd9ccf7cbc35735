package cli

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"inthub.dev/pkg/bus"
)

// TopologyFlags are the options of every binary that creates streams or
// KV buckets: one layout for all of them (bus.Topology). Every service of
// a deployment must get the same values.
func TopologyFlags() []Option {
	return []Option{
		Flag("stream-replicas", "INTHUB_STREAM_REPLICAS", "1",
			"replicas of every stream and KV bucket: 1 on one server, 3 on a cluster of 3; the same on every service (a lower value never shrinks existing streams)"),
		Flag("stream-placement", "INTHUB_STREAM_PLACEMENT", "",
			"servers of a NATS cluster that hold the streams and buckets: cluster=<name> and/or tag=<tag>, comma-separated"),
	}
}

// Topology reads the options of TopologyFlags.
func (v Values) Topology() (bus.Topology, error) {
	n, err := v.Int("stream-replicas", 1)
	if err != nil {
		return bus.Topology{}, err
	}
	p, err := bus.ParsePlacement(v.String("stream-placement"))
	if err != nil {
		return bus.Topology{}, Usagef("--stream-placement: %w", err)
	}
	t := bus.Topology{Replicas: n, Placement: p}
	if err := t.Validate(); err != nil {
		return bus.Topology{}, Usagef("--stream-replicas, --stream-placement: %w", err)
	}
	return t, nil
}

// NATSServers checks a comma-separated list of NATS URLs (nats://,
// tls://, ws://, wss://, or host:port) and returns it without blanks, as
// nats.Connect takes it. Give a client every member of a cluster: it
// needs one of them up to connect, then learns the others from the
// server.
func NATSServers(list string) (string, error) {
	var out []string
	for item := range strings.SplitSeq(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		u, err := url.Parse(item)
		if err != nil || !strings.Contains(item, "://") {
			u, err = url.Parse("nats://" + item)
		}
		if err != nil || u.Hostname() == "" || strings.Trim(u.Path, "/") != "" || strings.ContainsAny(item, "; \t") {
			return "", Usagef("NATS URL %q: want nats://host:port (several comma-separated)", redact(item))
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return "", Usagef("NATS URL %q: scheme %q is not nats, tls, ws or wss", redact(item), u.Scheme)
		}
		out = append(out, item)
	}
	if len(out) == 0 {
		return "", Usagef("no NATS URL given")
	}
	return strings.Join(out, ","), nil
}

// redact hides a password in a URL for an error message.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	return s
}

// NATSOptions are the connection settings every inthub process uses, in
// one place. The client reconnects forever, to any server of the list or
// of the cluster (which the server advertises), waiting ReconnectWait plus
// a jitter between rounds, so that a restarted NATS is not met by every
// replica of every service in the same millisecond. Pings every 10 s with
// 3 outstanding: a server that vanished without closing the connection (a
// dead machine, a partition) is noticed in about 30 s instead of the
// client default of 4 minutes. Publishes made while reconnecting wait in
// the client's buffer (8 MiB); JetStream publishes time out and are
// retried by the service's publisher (spool, outbox).
//
// It does not set RetryOnFailedConnect: ConnectNATS adds it for services,
// which must start before NATS does; a command a person runs should say at
// once that NATS is not there.
func NATSOptions(name string) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.Timeout(5 * time.Second),
	}
}

// NATSEventLog logs a connection's disconnects and reconnects, with the
// server it is connected to (a cluster member may change on reconnect).
func NATSEventLog(log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected; reconnecting", "natsUrl", nc.ConnectedUrlRedacted(), "error", err.Error())
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS reconnected", "natsUrl", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
		}),
	}
}

// ConnectNATS connects as services do: to the comma-separated servers in
// urls, with NATSOptions and then extra (e.g. NATSEventLog), retrying the
// first connection in the background, so a service outlives a NATS
// restart and may start before NATS.
func ConnectNATS(urls, name string, extra ...nats.Option) (*nats.Conn, error) {
	servers, err := NATSServers(urls)
	if err != nil {
		return nil, err
	}
	opts := append(NATSOptions(name), nats.RetryOnFailedConnect(true))
	nc, err := nats.Connect(servers, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactList(servers), err)
	}
	return nc, nil
}

func redactList(servers string) string {
	items := strings.Split(servers, ",")
	for i, s := range items {
		items[i] = redact(s)
	}
	return strings.Join(items, ",")
}
