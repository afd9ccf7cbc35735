package oci_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		config string
		field  string // "" = valid
	}{
		{`{"endpoint": "https://r.example.com"}`, ""},
		{`{"endpoint": "https://r.example.com/v2/", "probeRepository": "library/nginx", "probeTag": "1.27"}`, ""},
		{`{"endpoint": "http://r.example.com", "insecure": true}`, ""},
		{`{"endpoint": "http://r.example.com"}`, "endpoint"},
		{`{"endpoint": "ftp://r.example.com"}`, "endpoint"},
		{`{"endpoint": "https://u:p@r.example.com"}`, "endpoint"},
		{`{"endpoint": "https://r.example.com/some/path"}`, "endpoint"},
		{`{"endpoint": "https://r.example.com", "username": "u"}`, "password"},
		{`{"endpoint": "https://r.example.com", "username": "u", "password": "hunter2"}`, "password"},
		{`{"endpoint": "https://r.example.com", "probeRepository": "Bad/Name"}`, "probeRepository"},
		{`{"endpoint": "https://r.example.com", "probeTag": "-bad"}`, "probeTag"},
		{`{}`, "endpoint"},
	}
	for _, tt := range tests {
		c, err := oci.New(connectors.Config{Type: oci.Type, Config: json.RawMessage(tt.config)})
		if err != nil {
			t.Fatalf("New(%s): %v", tt.config, err)
		}
		err = c.Validate()
		var ce *oci.ConfigError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("Validate(%s) = %v", tt.config, err)
		case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field || fault.ClassOf(err) != fault.ClassPermanent):
			t.Errorf("Validate(%s) = %v, want an error on %s", tt.config, err, tt.field)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Validate echoes the secret: %v", err)
		}
		if tt.field != "" {
			// An invalid integration fails every call fast, never dials.
			if res := c.TestConnection(context.Background()); res.Class != fault.ClassPermanent || res.OK() {
				t.Errorf("TestConnection of %s = %s %s", tt.config, res.Status, res.Class)
			}
		}
	}
	if _, err := oci.New(connectors.Config{Config: json.RawMessage(`{"endpoint": "https://r", "extra": 1}`)}); err == nil {
		t.Error("New accepted an unknown field")
	}
	_, err := oci.New(connectors.Config{Config: json.RawMessage(`{"endpoint": "https://r"} {}`)})
	if err == nil || !strings.Contains(err.Error(), "trailing data") {
		t.Errorf("a config with trailing data: %v, want it refused", err)
	}
}

// The registered schema accepts what the connector reads.
func TestRegistered(t *testing.T) {
	info, ok := connectors.Default().Lookup(oci.Type)
	if !ok || info.Provider != "oci" || len(info.ConfigSchema) == 0 {
		t.Fatalf("Lookup = %+v, %v", info, ok)
	}
	cv, err := schemas.CompileConfig(info.ConfigSchema, nil)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	_ = json.Unmarshal([]byte(`{"endpoint": "http://127.0.0.1:5000", "insecure": true, "username": "u", "password": "authref://env/P", "probeRepository": "team/app", "probeTag": "v1", "timeoutSeconds": 5}`), &doc)
	if err := cv.Validate(doc); err != nil {
		t.Errorf("schema refuses a full config: %v", err)
	}
	c, err := connectors.Default().New(connectors.Config{Type: oci.Type, Config: json.RawMessage(`{"endpoint": "https://r.example.com"}`)})
	if err != nil || c.Type() != oci.Type {
		t.Errorf("Default().New = %v, %v", c, err)
	}
}
