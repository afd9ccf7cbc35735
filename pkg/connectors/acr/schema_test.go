package acr_test

import (
	"testing"

	"inthub.dev/pkg/connectors/acr"
	"inthub.dev/pkg/connectors/oci/ocitest"
)

// TestSchema: the config schema the catalog validates with agrees with the
// connector on what a valid config is, and marks the secrets.
func TestSchema(t *testing.T) {
	ocitest.CheckSchema(t, acr.Type, map[string]bool{
		`{"endpoint":"https://r.azurecr.io","tenantId":"` + tenant + `","clientId":"` + clientID + `","clientSecret":"authref://env/S"}`:                 true,
		`{"endpoint":"https://r.azurecr.io","tenantId":"contoso.onmicrosoft.com","clientId":"c","scope":"https://containerregistry.azure.net/.default"}`: true,
		`{"endpoint":"https://r.azurecr.io","authMode":"admin","username":"r","password":"authref://env/P"}`:                                             true,
		`{"endpoint":"https://r.azurecr.io","clientId":"c"}`:                                                                                             false, // no tenant
		`{"endpoint":"https://r.azurecr.io","authMode":"admin"}`:                                                                                         false, // no username
		`{"endpoint":"https://r.azurecr.io","tenantId":"t","clientId":"c","clientSecret":"abc"}`:                                                         false, // secret in clear
		`{"endpoint":"https://r.azurecr.io","tenantId":"t","clientId":"c","scope":"https://x/"}`:                                                         false, // not /.default
		`{"endpoint":"https://r.azurecr.io","tenantId":"t","clientId":"c","authMode":"msi"}`:                                                             false,
		`{"tenantId":"t","clientId":"c"}`: false,
	}, "clientSecret", "password")
}
