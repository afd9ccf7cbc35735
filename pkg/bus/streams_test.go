package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestProvisionIsIdempotent(t *testing.T) {
	e := newEnv(t) // provisions once
	ctx := context.Background()
	if err := Provision(ctx, e.js, DefaultStreamSettings()); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	for _, want := range Streams(DefaultStreamSettings()) {
		s, err := e.js.Stream(ctx, want.Name)
		if err != nil {
			t.Fatalf("%s: %v", want.Name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := info.Config
		if c.Storage != jetstream.FileStorage || c.Duplicates < 2*time.Minute || c.MaxAge == 0 || c.MaxBytes <= 0 {
			t.Errorf("%s: storage %v duplicates %s age %s bytes %d", want.Name, c.Storage, c.Duplicates, c.MaxAge, c.MaxBytes)
		}
		if want.Name == StreamDLQ && c.Discard != jetstream.DiscardNew {
			t.Errorf("DLQ must refuse new letters when full, not drop old ones")
		}
	}
}

func TestStreamSettingsValidate(t *testing.T) {
	tests := []struct {
		name string
		s    StreamSettings
		ok   bool
	}{
		{"defaults", StreamSettings{}, true},
		{"cluster", StreamSettings{Topology: Topology{Replicas: 3}}, true},
		{"too many replicas", StreamSettings{Topology: Topology{Replicas: 7}}, false},
		{"short duplicate window", StreamSettings{Duplicates: time.Minute}, false},
		{"window beyond age", StreamSettings{MaxAge: 3 * time.Minute, Duplicates: 5 * time.Minute}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
