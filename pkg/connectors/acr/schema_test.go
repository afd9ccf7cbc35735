package acr_test

import (
	"encoding/json"
	"testing"

	"inthub.dev/pkg/connectors/acr"
	"inthub.dev/schemas"
)

// TestSchema: the config schema the catalog validates with agrees with the
// connector on what a valid config is, and marks the secrets.
func TestSchema(t *testing.T) {
	b, err := schemas.ConfigSchema(acr.Type)
	if err != nil {
		t.Fatal(err)
	}
	cv, err := schemas.CompileConfig(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		conf  string
		valid bool
	}{
		{`{"endpoint":"https://r.azurecr.io","tenantId":"` + tenant + `","clientId":"` + clientID + `","clientSecret":"authref://env/S"}`, true},
		{`{"endpoint":"https://r.azurecr.io","tenantId":"contoso.onmicrosoft.com","clientId":"c","scope":"https://containerregistry.azure.net/.default"}`, true},
		{`{"endpoint":"https://r.azurecr.io","authMode":"admin","username":"r","password":"authref://env/P"}`, true},
		{`{"endpoint":"https://r.azurecr.io","clientId":"c"}`, false},                                     // no tenant
		{`{"endpoint":"https://r.azurecr.io","authMode":"admin"}`, false},                                 // no username
		{`{"endpoint":"https://r.azurecr.io","tenantId":"t","clientId":"c","clientSecret":"abc"}`, false}, // secret in clear
		{`{"endpoint":"https://r.azurecr.io","tenantId":"t","clientId":"c","scope":"https://x/"}`, false}, // not /.default
		{`{"endpoint":"https://r.azurecr.io","tenantId":"t","clientId":"c","authMode":"msi"}`, false},
		{`{"tenantId":"t","clientId":"c"}`, false},
	}
	for _, tt := range tests {
		var v any
		if err := json.Unmarshal([]byte(tt.conf), &v); err != nil {
			t.Fatal(err)
		}
		if err := cv.Validate(v); (err == nil) != tt.valid {
			t.Errorf("%s: Validate = %v, want valid %v", tt.conf, err, tt.valid)
		}
	}
	secret, err := schemas.SecretFields(b)
	if err != nil || len(secret) != 2 || secret[0] != "clientSecret" || secret[1] != "password" {
		t.Errorf("SecretFields = %q, %v", secret, err)
	}
}
