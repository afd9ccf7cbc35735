package schemas_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"inthub.dev/schemas"
)

func TestConfigTypes(t *testing.T) {
	want := []string{"ci.github_actions", "ci.gitlab_ci", "monitoring.cloudwatch", "registry.acr", "registry.dockerhub", "registry.ecr",
		"registry.gcr", "registry.ghcr", "registry.harbor", "registry.oci", "scm.bitbucket", "scm.github", "scm.gitlab", "test.inmemory",
		"vault.hashicorp"}
	if got := schemas.ConfigTypes(); !slices.Equal(got, want) {
		t.Fatalf("ConfigTypes() = %q, want %q", got, want)
	}
	if _, err := schemas.ConfigSchema("scm.nope"); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Errorf("ConfigSchema(unknown) = %v", err)
	}
	if _, err := schemas.ConfigSchema("../common"); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Errorf("ConfigSchema(../common) = %v", err)
	}
	// The event validator stays limited to event schemas.
	if v := validator(t); v.Has("scm.github") {
		t.Error("the event Validator picked up a config schema")
	}
}

// Every built-in config schema compiles, is closed, names itself, bounds
// the two common settings and declares at least its secrets.
func TestConfigSchemasWellFormed(t *testing.T) {
	for _, typ := range schemas.ConfigTypes() {
		t.Run(typ, func(t *testing.T) {
			b, err := schemas.ConfigSchema(typ)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := schemas.CompileConfig(b, nil); err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v", doc["$schema"])
			}
			if want := "https://inthub.dev/schemas/config/" + typ + ".json"; doc["$id"] != want {
				t.Errorf("$id = %v, want %s", doc["$id"], want)
			}
			if doc["additionalProperties"] != false {
				t.Error("not closed (additionalProperties is not false)")
			}
			props := doc["properties"].(map[string]any)
			for _, k := range []string{"timeoutSeconds", "healthIntervalSeconds"} {
				if _, ok := props[k]; !ok {
					t.Errorf("no %s", k)
				}
			}
			cv, _ := schemas.CompileConfig(b, nil)
			for _, bad := range []int{0, 1_000_000} {
				if err := cv.Validate(map[string]any{"timeoutSeconds": bad}); !hasField(err, "timeoutSeconds") {
					t.Errorf("timeoutSeconds %d: %v", bad, err)
				}
				if err := cv.Validate(map[string]any{"healthIntervalSeconds": bad}); !hasField(err, "healthIntervalSeconds") {
					t.Errorf("healthIntervalSeconds %d: %v", bad, err)
				}
			}
		})
	}
}

func hasField(err error, field string) bool {
	var fes schemas.FieldErrors
	if !errors.As(err, &fes) {
		return false
	}
	for _, fe := range fes {
		if fe.Field == field {
			return true
		}
	}
	return false
}

func TestSecretFields(t *testing.T) {
	want := map[string][]string{
		"ci.github_actions":     {"privateKey"},
		"ci.gitlab_ci":          {"jobToken", "token"},
		"monitoring.cloudwatch": {"accessKeyId", "secretAccessKey"},
		"registry.acr":          {"clientSecret", "password"},
		"registry.dockerhub":    {"token"},
		"registry.ecr":          {"secretAccessKey", "sessionToken"},
		"registry.gcr":          {"serviceAccountKey"},
		"registry.ghcr":         {"token"},
		"registry.harbor":       {"password"},
		"registry.oci":          {"password"},
		"scm.bitbucket":         {"password", "token"},
		"scm.github":            {"privateKey", "webhookSecret"},
		"scm.gitlab":            {"jobToken", "token", "webhookSecret"},
		"test.inmemory":         {"token"},
		"vault.hashicorp":       {"auth.roleId", "auth.secretId", "auth.token"},
	}
	for typ, fields := range want {
		b, _ := schemas.ConfigSchema(typ)
		got, err := schemas.SecretFields(b)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, fields) {
			t.Errorf("%s: SecretFields = %q, want %q", typ, got, fields)
		}
	}
	nested := []byte(`{
		"properties": {
			"auth": {"$ref": "#/$defs/auth"},
			"extra": {"type": "array", "items": {"properties": {"key": {"x-secret": true}}}},
			"headers": {"additionalProperties": {"x-secret": true}},
			"plain": {"x-secret": false}
		},
		"$defs": {"auth": {"properties": {"password": {"type": "string", "x-secret": true}}}}
	}`)
	got, err := schemas.SecretFields(nested)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"auth.password", "extra[].key", "headers.*"}; !slices.Equal(got, want) {
		t.Errorf("nested SecretFields = %q, want %q", got, want)
	}
}

const github = `"appId": 1, "installationId": 2`

func TestConfigValidate(t *testing.T) {
	check := func(s string) error {
		if s != "authref://env/OK" {
			return errors.New("must be a valid AuthRef")
		}
		return nil
	}
	tests := []struct {
		typ, config string
		field       string // "" = valid
		reason      string
	}{
		{"scm.github", `{` + github + `, "privateKey": "authref://env/OK"}`, "", ""},
		{"scm.github", `{` + github + `, "privateKey": "-----BEGIN RSA PRIVATE KEY-----"}`, "privateKey", "must be a valid AuthRef"},
		{"scm.github", `{` + github + `, "privateKey": {"a": 1}}`, "privateKey", "must be string"},
		{"scm.github", `{` + github + `}`, "privateKey", "required"},
		{"scm.github", `{` + github + `, "privateKey": "authref://env/OK", "extra": 1}`, "extra", "unknown field"},
		{"scm.github", `{"appId": "1", "installationId": 2, "privateKey": "authref://env/OK"}`, "appId", "must be integer"},
		{"scm.github", `{` + github + `, "privateKey": "authref://env/OK", "endpoint": "not a url"}`, "endpoint", "absolute https URL"},
		{"scm.github", `{` + github + `, "privateKey": "authref://env/OK", "endpoint": "http://ghe.example.com"}`, "endpoint", "absolute https URL"},
		{"scm.gitlab", `{"token": "authref://env/OK"}`, "", ""},
		{"scm.gitlab", `{"jobToken": "authref://env/OK"}`, "", ""},
		{"scm.gitlab", `{}`, "token", "required"},
		{"scm.gitlab", `{"token": "authref://env/OK", "jobToken": "authref://env/OK"}`, "", "alternatives"},
		{"registry.harbor", `{"endpoint": "https://harbor.example.com", "username": "robot$ci", "password": "authref://env/OK"}`, "", ""},
		{"registry.harbor", `{"endpoint": "https://harbor.example.com", "username": "robot$ci", "password": "Harbor12345"}`, "password", "must be a valid AuthRef"},
		{"registry.oci", `{"endpoint": "https://r.example.com", "insecure": true}`, "", ""},
		{"registry.oci", `{"endpoint": "https://r.example.com", "username": "u"}`, "password", "required when username"},
		{"test.inmemory", `{"healthy": false, "latencyMs": 5, "failWith": "transient"}`, "", ""},
		{"test.inmemory", `{"failWith": "boom"}`, "failWith", "one of"},
	}
	for _, tt := range tests {
		b, _ := schemas.ConfigSchema(tt.typ)
		cv, err := schemas.CompileConfig(b, check)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal([]byte(tt.config), &doc); err != nil {
			t.Fatal(err)
		}
		err = cv.Validate(doc)
		if tt.reason == "" {
			if err != nil {
				t.Errorf("%s %s: %v", tt.typ, tt.config, err)
			}
			continue
		}
		var fes schemas.FieldErrors
		if !errors.As(err, &fes) {
			t.Errorf("%s %s: err = %v, want FieldErrors", tt.typ, tt.config, err)
			continue
		}
		ok := false
		for _, fe := range fes {
			ok = ok || fe.Field == tt.field && strings.Contains(fe.Reason, tt.reason)
		}
		if !ok {
			t.Errorf("%s %s: %v, want %s: …%s…", tt.typ, tt.config, err, tt.field, tt.reason)
		}
		if strings.Contains(err.Error(), "BEGIN RSA") || strings.Contains(err.Error(), "Harbor12345") {
			t.Errorf("error %q echoes the secret", err)
		}
	}
}

func TestCompileConfigRefusesBadSchemas(t *testing.T) {
	for _, s := range []string{
		`{"properties": {"k": {"x-secret": "yes"}}}`,
		`{"type": "nope"}`,
		`{"$ref": "https://example.com/remote.json"}`,
		`[]`,
		`{`,
	} {
		if _, err := schemas.CompileConfig([]byte(s), nil); err == nil {
			t.Errorf("CompileConfig(%s) succeeded", s)
		}
	}
}

// A schema with an $id of its own still gets its x-messages.
func TestCompileConfigForeignID(t *testing.T) {
	cv, err := schemas.CompileConfig([]byte(`{
		"$id": "https://plugins.example.com/x.json",
		"properties": {"region": {"type": "string", "pattern": "^[a-z]+-[0-9]$", "x-message": "must be a region such as eu-1"}}
	}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = cv.Validate(map[string]any{"region": "EU"})
	if !hasField(err, "region") || !strings.Contains(err.Error(), "must be a region") {
		t.Fatalf("err = %v", err)
	}
}
