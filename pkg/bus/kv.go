package bus

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketIntegrations is the JetStream KV bucket that holds every live
// integration, the catalog's materialized view for the services that need
// the whole set at start (health-poller, annotation worker).
//
// Key: <tenantId>.<integrationId> (IntegrationKey). Value: the JSON of
// events.Integration as the latest integration.created or
// integration.updated carried it (never a secret). A deleted integration's
// key holds a delete marker. Only the catalog's outbox forwarder writes it.
//
// Why a bucket and not a replay of the INTEGRATIONS stream: that stream
// keeps messages for MaxAge (7 days by default), so an integration created
// earlier and not changed since would be missing from a replay at a cold
// start; a bucket with history 1 keeps the latest value of every key for
// ever, and one KV watch gives the snapshot and the changes after it.
const BucketIntegrations = "INTEGRATIONS_STATE"

// KeyValues returns the configuration of every inthub KV bucket: the
// integrations below and the workers' deferral counts (BucketDeferrals).
//
// History 1: consumers need the latest value only, and a delete marker
// replaces the value it deletes (one marker per deleted key is kept, which
// is what makes a replayed older event unable to bring the key back). No
// TTL: a value lives as long as its integration. MaxBytes bounds the bucket
// like a stream; a full bucket refuses writes (KV buckets discard new),
// which stalls the outbox forwarder loudly rather than dropping state.
func KeyValues(s StreamSettings) []jetstream.KeyValueConfig {
	s = s.withDefaults()
	return []jetstream.KeyValueConfig{s.Topology.KeyValue(jetstream.KeyValueConfig{
		Bucket:      BucketIntegrations,
		Description: "latest record of every live integration, written by the catalog's outbox forwarder",
		History:     1,
		Storage:     jetstream.FileStorage,
		MaxBytes:    s.MaxBytes,
		Compression: true,
	}), deferralsBucket(s)}
}

// ProvisionKV creates or updates every KV bucket. Like Provision, which
// calls it, it is idempotent and safe to call from every service at start.
func ProvisionKV(ctx context.Context, js jetstream.JetStream, s StreamSettings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("bus: stream settings: %w", err)
	}
	for _, cfg := range KeyValues(s) {
		if _, err := ProvisionKeyValue(ctx, js, s.Topology, cfg); err != nil {
			return err
		}
	}
	return nil
}

// IntegrationKey is the key of an integration in BucketIntegrations.
func IntegrationKey(tenantID, integrationID string) string {
	return tenantID + "." + integrationID
}

// ParseIntegrationKey splits a BucketIntegrations key into tenant and
// integration id; ok is false unless the key has exactly two non-empty
// tokens.
func ParseIntegrationKey(key string) (tenantID, integrationID string, ok bool) {
	tenantID, integrationID, found := strings.Cut(key, ".")
	if !found || tenantID == "" || integrationID == "" || strings.Contains(integrationID, ".") {
		return "", "", false
	}
	return tenantID, integrationID, true
}
