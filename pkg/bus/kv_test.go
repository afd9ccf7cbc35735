package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Provision creates the integrations bucket with the settings the
// watchers rely on, and calling it again (as every service does at start)
// changes nothing and loses no value.
func TestProvisionCreatesIntegrationsBucket(t *testing.T) {
	e := newEnv(t) // provisions once
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, BucketIntegrations)
	if err != nil {
		t.Fatalf("bucket %s after Provision: %v", BucketIntegrations, err)
	}
	key := IntegrationKey(tenantA, integrationID(1))
	if _, err := kv.Put(ctx, key, []byte(`{"version":1}`)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := Provision(ctx, e.js, DefaultStreamSettings()); err != nil {
			t.Fatalf("provision again: %v", err)
		}
		if err := ProvisionKV(ctx, e.js, DefaultStreamSettings()); err != nil {
			t.Fatalf("provision KV again: %v", err)
		}
	}
	got, err := kv.Get(ctx, key)
	if err != nil || string(got.Value()) != `{"version":1}` {
		t.Fatalf("value after re-provisioning: %v, %v", got, err)
	}

	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.History() != 1 || st.TTL() != 0 || st.BackingStore() != "JetStream" {
		t.Errorf("history %d ttl %s store %s, want 1, no TTL, JetStream", st.History(), st.TTL(), st.BackingStore())
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if c := info.Config; c.Storage != jetstream.FileStorage || c.Replicas != 1 || c.MaxBytes != DefaultStreamSettings().MaxBytes {
		t.Errorf("bucket stream: storage %v replicas %d max bytes %d", c.Storage, c.Replicas, c.MaxBytes)
	}
	// The bucket's subjects belong to no inthub stream: a stream catching
	// $KV.> would swallow every write.
	if s := StreamFor("$KV." + BucketIntegrations + "." + key); s != "" {
		t.Errorf("KV subject stored by stream %s", s)
	}
}

func TestProvisionKVRefusesBadSettings(t *testing.T) {
	e := newEnv(t)
	err := ProvisionKV(context.Background(), e.js, StreamSettings{Topology: Topology{Replicas: 9}})
	if err == nil {
		t.Fatal("ProvisionKV accepted 9 replicas")
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		t.Fatalf("settings reached the server: %v", err)
	}
}

func TestIntegrationKey(t *testing.T) {
	id := integrationID(7)
	tests := []struct {
		key            string
		tenant, integr string
		ok             bool
	}{
		{IntegrationKey(tenantA, id), tenantA, id, true},
		{"nodot", "", "", false},
		{"." + id, "", "", false},
		{tenantA + ".", "", "", false},
		{tenantA + "." + id + ".x", "", "", false},
	}
	for _, tt := range tests {
		tenant, integr, ok := ParseIntegrationKey(tt.key)
		if tenant != tt.tenant || integr != tt.integr || ok != tt.ok {
			t.Errorf("ParseIntegrationKey(%q) = %q, %q, %v; want %q, %q, %v", tt.key, tenant, integr, ok, tt.tenant, tt.integr, tt.ok)
		}
	}
}
