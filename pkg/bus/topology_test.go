package bus

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"inthub.dev/pkg/natstest"
)

func TestParsePlacement(t *testing.T) {
	tests := []struct {
		in      string
		want    *jetstream.Placement
		wantErr string
	}{
		{"", nil, ""},
		{"  ", nil, ""},
		{"cluster=east", &jetstream.Placement{Cluster: "east"}, ""},
		{"cluster=east, tag=ssd,tag=az-a", &jetstream.Placement{Cluster: "east", Tags: []string{"ssd", "az-a"}}, ""},
		{"tag=ssd", &jetstream.Placement{Tags: []string{"ssd"}}, ""},
		{"east", nil, "want cluster=<name> or tag=<tag>"},
		{"cluster=", nil, "want cluster=<name>"},
		{"cluster=a,cluster=b", nil, "two clusters"},
		{"zone=a", nil, "unknown key"},
		{"cluster=east,", nil, "want cluster=<name>"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePlacement(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePlacement(%q) error = %v, want one with %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePlacement(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParsePlacement(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if got != nil {
				back, err := ParsePlacement(FormatPlacement(got))
				if err != nil || !reflect.DeepEqual(back, got) {
					t.Fatalf("round trip of %q: %+v, %v", tt.in, back, err)
				}
			}
		})
	}
}

func TestTopologyValidate(t *testing.T) {
	tests := []struct {
		name string
		topo Topology
		ok   bool
	}{
		{"zero", Topology{}, true},
		{"cluster of three", Topology{Replicas: 3, Placement: &jetstream.Placement{Cluster: "east"}}, true},
		{"negative", Topology{Replicas: -1}, false},
		{"six", Topology{Replicas: 6}, false},
		{"empty placement", Topology{Replicas: 3, Placement: &jetstream.Placement{}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.topo.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// Every stream and bucket the fleet declares follows the one setting, and
// none shares the placement it was given (a caller editing one stream's
// tags must not move the others).
func TestTopologyAppliesToEveryStreamAndBucket(t *testing.T) {
	s := DefaultStreamSettings()
	s.Topology = Topology{Replicas: 3, Placement: &jetstream.Placement{Cluster: "east", Tags: []string{"ssd"}}}
	seen := map[*jetstream.Placement]bool{}
	check := func(name string, replicas int, p *jetstream.Placement) {
		t.Helper()
		if replicas != 3 || p == nil || p.Cluster != "east" || !reflect.DeepEqual(p.Tags, []string{"ssd"}) {
			t.Errorf("%s: replicas %d, placement %+v; want 3 in cluster east, tag ssd", name, replicas, p)
		}
		if seen[p] || p == s.Placement {
			t.Errorf("%s: shares its placement", name)
		}
		seen[p] = true
	}
	for _, c := range Streams(s) {
		check(c.Name, c.Replicas, c.Placement)
	}
	for _, c := range KeyValues(s) {
		check(c.Bucket, c.Replicas, c.Placement)
	}
	if got := (Topology{}).Stream(jetstream.StreamConfig{Replicas: 5}).Replicas; got != 1 {
		t.Errorf("zero topology gives %d replicas, want 1", got)
	}
}

// On a three-node cluster: the streams and buckets are created with three
// replicas and the placement reaches the servers; a service started
// later with the single-server default does not shrink them.
func TestProvisionOnCluster(t *testing.T) {
	c := natstest.Cluster(t, 3)
	js, _ := c.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	r3 := DefaultStreamSettings()
	r3.Topology = Topology{Replicas: 3, Placement: &jetstream.Placement{Cluster: "inthub-test"}}
	if err := Provision(ctx, js, r3); err != nil {
		t.Fatalf("provision R3: %v", err)
	}
	if _, err := NewIdempotencyGuard(ctx, js, "TOPOLOGY_GUARD", time.Hour, r3.Topology); err != nil {
		t.Fatalf("idempotency guard: %v", err)
	}
	names := []string{kvStream(BucketIntegrations), kvStream("TOPOLOGY_GUARD")}
	for _, sc := range Streams(r3) {
		names = append(names, sc.Name)
	}
	wantLayout := func(when string) {
		t.Helper()
		for _, name := range names {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatalf("%s: stream %s: %v", when, name, err)
			}
			info := s.CachedInfo()
			if info.Config.Replicas != 3 || info.Config.Placement == nil || info.Config.Placement.Cluster != "inthub-test" {
				t.Errorf("%s: %s has %d replicas, placement %+v; want 3 in inthub-test", when, name, info.Config.Replicas, info.Config.Placement)
			}
			if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
				t.Errorf("%s: %s cluster info %+v, want a leader and 2 replicas", when, name, info.Cluster)
			}
		}
	}
	wantLayout("after R3")

	if err := Provision(ctx, js, DefaultStreamSettings()); err != nil {
		t.Fatalf("provision with the defaults: %v", err)
	}
	if _, err := NewIdempotencyGuard(ctx, js, "TOPOLOGY_GUARD", time.Hour, Topology{}); err != nil {
		t.Fatalf("idempotency guard with the defaults: %v", err)
	}
	wantLayout("after a provision with the defaults")

	// A placement no server matches is the server's error, with the
	// topology in it.
	bad := DefaultStreamSettings()
	bad.Topology = Topology{Replicas: 3, Placement: &jetstream.Placement{Cluster: "elsewhere"}}
	_, err := ProvisionKeyValue(ctx, js, bad.Topology, jetstream.KeyValueConfig{Bucket: "NOWHERE"})
	if err == nil || !strings.Contains(err.Error(), "R3 cluster=elsewhere") {
		t.Fatalf("provision in a cluster that does not exist: %v", err)
	}
}
