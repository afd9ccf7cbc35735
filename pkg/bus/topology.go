package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Topology is where the fleet's streams and KV buckets live on the NATS
// servers: one setting for all of them, so that a service cannot keep its
// bucket on one server while the streams it feeds are replicated.
//
// The zero value is one replica, anywhere: right for one server (the
// embedded dev server is always one). On a cluster of three, Replicas 3
// keeps every stream and bucket writable with one server down, and a
// publish is acknowledged once two servers hold it.
type Topology struct {
	// Replicas per stream and bucket, 1 to 5; 0 means 1. More replicas
	// than servers is refused by NATS when the stream is created.
	Replicas int
	// Placement picks the servers (a cluster by name, servers by tag);
	// nil lets NATS choose, or keeps what the operator set by hand.
	Placement *jetstream.Placement
}

// replicas is Replicas with its default.
func (t Topology) replicas() int {
	if t.Replicas == 0 {
		return 1
	}
	return t.Replicas
}

// Validate rejects a replica count NATS would refuse anyway, with the
// setting's name in the message.
func (t Topology) Validate() error {
	if r := t.replicas(); r < 1 || r > 5 {
		return fmt.Errorf("replicas: %d is outside 1..5", t.Replicas)
	}
	if p := t.Placement; p != nil && p.Cluster == "" && len(p.Tags) == 0 {
		return errors.New("placement: names neither a cluster nor a tag")
	}
	return nil
}

// Stream returns c laid out by t.
func (t Topology) Stream(c jetstream.StreamConfig) jetstream.StreamConfig {
	c.Replicas = t.replicas()
	c.Placement = t.placement()
	return c
}

// KeyValue returns c laid out by t.
func (t Topology) KeyValue(c jetstream.KeyValueConfig) jetstream.KeyValueConfig {
	c.Replicas = t.replicas()
	c.Placement = t.placement()
	return c
}

func (t Topology) placement() *jetstream.Placement {
	if t.Placement == nil {
		return nil
	}
	p := *t.Placement
	p.Tags = slices.Clone(p.Tags)
	return &p
}

// String is the topology as the flags spell it, for logs.
func (t Topology) String() string {
	s := fmt.Sprintf("R%d", t.replicas())
	if t.Placement != nil {
		s += " " + FormatPlacement(t.Placement)
	}
	return s
}

// ParsePlacement reads a placement as the --stream-placement flag spells
// it: comma-separated "cluster=<name>" (at most once) and "tag=<tag>"
// items, e.g. "cluster=east,tag=ssd,tag=az-a". An empty string is no
// placement (nil).
func ParsePlacement(s string) (*jetstream.Placement, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var p jetstream.Placement
	for item := range strings.SplitSeq(s, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		val = strings.TrimSpace(val)
		if !ok || val == "" {
			return nil, fmt.Errorf("placement %q: want cluster=<name> or tag=<tag> items, comma-separated", item)
		}
		switch strings.TrimSpace(key) {
		case "cluster":
			if p.Cluster != "" {
				return nil, fmt.Errorf("placement: two clusters (%s, %s); a stream lives in one", p.Cluster, val)
			}
			p.Cluster = val
		case "tag":
			p.Tags = append(p.Tags, val)
		default:
			return nil, fmt.Errorf("placement %q: unknown key %q (cluster or tag)", item, key)
		}
	}
	return &p, nil
}

// FormatPlacement is the inverse of ParsePlacement.
func FormatPlacement(p *jetstream.Placement) string {
	if p == nil {
		return ""
	}
	var items []string
	if p.Cluster != "" {
		items = append(items, "cluster="+p.Cluster)
	}
	for _, t := range p.Tags {
		items = append(items, "tag="+t)
	}
	return strings.Join(items, ",")
}

// keepLayout lets an existing stream keep more replicas, or a placement,
// than the caller asks for. Every replica of every service provisions at
// start; one started without the cluster's settings (a forgotten
// environment variable, a default of 1) must not shrink the replicated
// streams under the others. Scaling down is an operator's act
// (`nats stream edit --replicas`) followed by the new setting everywhere.
func keepLayout(replicas int, placement *jetstream.Placement, have *jetstream.StreamConfig) (int, *jetstream.Placement) {
	if have == nil {
		return replicas, placement
	}
	if placement == nil {
		placement = have.Placement
	}
	return max(replicas, have.Replicas), placement
}

// existingStream returns the configuration of stream name, or nil if it
// does not exist yet.
func existingStream(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamConfig, error) {
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cfg := s.CachedInfo().Config
	return &cfg, nil
}

// kvStream is the name of the stream behind KV bucket b.
func kvStream(bucket string) string { return "KV_" + bucket }

// ProvisionKeyValue creates or updates one KV bucket laid out by t,
// keeping the larger replica count or the placement it already has (see
// keepLayout). Services that own buckets of their own use it, so every
// bucket of the fleet follows the one Topology.
func ProvisionKeyValue(ctx context.Context, js jetstream.JetStream, t Topology, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("bus: topology: %w", err)
	}
	cfg = t.KeyValue(cfg)
	have, err := existingStream(ctx, js, kvStream(cfg.Bucket))
	if err != nil {
		return nil, fmt.Errorf("bus: KV bucket %s: %w", cfg.Bucket, err)
	}
	cfg.Replicas, cfg.Placement = keepLayout(cfg.Replicas, cfg.Placement, have)
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bus: provision KV bucket %s (%s): %w", cfg.Bucket, t, err)
	}
	return kv, nil
}

// provisionStream creates or updates one stream, keeping its layout (see
// keepLayout).
func provisionStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	have, err := existingStream(ctx, js, cfg.Name)
	if err != nil {
		return fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
	}
	cfg.Replicas, cfg.Placement = keepLayout(cfg.Replicas, cfg.Placement, have)
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("bus: provision stream %s (R%d): %w", cfg.Name, cfg.Replicas, err)
	}
	return nil
}
