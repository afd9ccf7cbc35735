package configcheck_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/egress"
	"inthub.dev/schemas"
	"inthub.dev/services/catalog/configcheck"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type resolver map[string]string

func (r resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	a, ok := r[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []netip.Addr{netip.MustParseAddr(a)}, nil
}

var dns = resolver{
	"github.com":           "140.82.121.4",
	"ghe.example.com":      "93.184.215.14",
	"harbor.example.com":   "93.184.215.15",
	"internal.example.com": "10.1.2.3",
	"metadata.example.com": "169.254.169.254",
}

func checker(t *testing.T) *configcheck.Checker {
	t.Helper()
	c, err := configcheck.New(egress.Policy{}, dns)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Fake credentials, each of the shape the scanner knows. They are built
// at run time so that secret scanners of the repository do not flag them.
var (
	ghToken  = "ghp_" + strings.Repeat("aB3dE5fG7h", 4)
	glToken  = "glpat-" + "xY9zW8vU7tS6rQ5pO4nM"
	awsKey   = "AKIA" + "IOSFODNN7EXAMPLE"
	slackTok = "xoxb-" + "123456789012-abcdefABCDEF"
	jwt      = "eyJhbGciOiJIUzI1NiJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIn0." + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
	pem      = "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
	randKey  = "q3Zt8Yb2Lm5Xv1Rk9Pw4Jd7Hs6Gf0Nc" + "A2Ue"
)

func TestCheck(t *testing.T) {
	const ok = `"appId": 1, "installationId": 2, "privateKey": "authref://vault/secret/data/gh#key"`
	tests := []struct {
		name    string
		typ     string
		config  string
		authRef string
		field   string // "" = accepted
		reason  string
	}{
		{"valid github", "scm.github", `{` + ok + `, "endpoint": "https://github.com", "webhookSecret": "authref://env/GH_WEBHOOK"}`, "authref://env/X", "", ""},
		{"valid ghes", "scm.github", `{` + ok + `, "endpoint": "https://ghe.example.com", "organization": "acme"}`, "", "", ""},
		{"valid harbor", "registry.harbor", `{"endpoint": "https://harbor.example.com", "username": "robot$ci", "password": "authref://file/etc/inthub/harbor"}`, "", "", ""},
		{"valid inmemory", "test.inmemory", `{"healthy": true, "latencyMs": 3}`, "", "", ""},
		{"empty config", "test.inmemory", ``, "", "", ""},
		{"unknown field", "scm.github", `{` + ok + `, "colour": "blue"}`, "", "config.colour", "unknown field"},
		{"wrong type", "scm.github", `{"appId": "one", "installationId": 2, "privateKey": "authref://env/K"}`, "", "config.appId", "must be integer"},
		{"missing required", "scm.github", `{"appId": 1, "privateKey": "authref://env/K"}`, "", "config.installationId", "required"},
		{"out of bounds", "scm.github", `{` + ok + `, "timeoutSeconds": 0}`, "", "config.timeoutSeconds", ">= 1"},
		{"not an object", "scm.github", `[1]`, "", "config", "JSON object"},
		{"not JSON", "scm.github", `{"appId":`, "", "config", "JSON object"},
		{"unknown type", "scm.nope", `{}`, "", "type", "unknown integration type"},
		{"x-secret plain", "registry.harbor", `{"endpoint": "https://harbor.example.com", "username": "u", "password": "Harbor12345"}`, "", "config.password", "must be an AuthRef URI"},
		{"x-secret bad ref", "scm.github", `{"appId": 1, "installationId": 2, "privateKey": "authref://vault/secret/gh"}`, "", "config.privateKey", "#field"},
		{"x-secret PEM", "scm.github", `{"appId": 1, "installationId": 2, "privateKey": ` + q(pem) + `}`, "", "config.privateKey", "must be an AuthRef URI"},
		{"bad authRef", "test.inmemory", `{}`, "vault://secret#x", "authRef", "must start with authref://"},
		{"authRef dotdot", "test.inmemory", `{}`, "authref://file/etc/../shadow", "authRef", `".."`},
		{"endpoint loopback", "scm.github", `{` + ok + `, "endpoint": "https://127.0.0.1"}`, "", "config.endpoint", "egress policy"},
		{"endpoint private by name", "registry.harbor", `{"endpoint": "https://internal.example.com", "username": "u", "password": "authref://env/P"}`, "", "config.endpoint", "egress policy"},
		{"endpoint metadata", "registry.oci", `{"endpoint": "https://metadata.example.com/latest"}`, "", "config.endpoint", "egress policy"},
		{"endpoint mapped loopback", "registry.oci", `{"endpoint": "https://[::ffff:127.0.0.1]/"}`, "", "config.endpoint", "egress policy"},
		{"endpoint http", "registry.oci", `{"endpoint": "http://harbor.example.com"}`, "", "config.endpoint", "https"},
		{"endpoint userinfo", "registry.oci", `{"endpoint": "https://u:p@harbor.example.com"}`, "", "config.endpoint", "password"},
	}
	// A schema of a plugin type: open, with free-text and nested fields,
	// so the scanner is what stands between a pasted token and the store.
	open := json.RawMessage(`{
		"type": "object",
		"properties": {
			"description": {"type": "string"},
			"digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
			"apiUrl": {"type": "string"},
			"mirror": {"type": "string", "format": "uri"},
			"hosts": {"type": "array", "items": {"type": "object", "properties": {"url": {"type": "string"}}}},
			"auth": {"type": "object", "properties": {"key": {"type": "string", "x-secret": true}}}
		}
	}`)
	plugin := []struct {
		name, config, field, reason string
	}{
		{"plugin valid", `{"description": "prod mirror", "apiUrl": "https://ghe.example.com", "auth": {"key": "authref://env/K"}, "digest": "` + strings.Repeat("ab12", 16) + `"}`, "", ""},
		{"authref anywhere", `{"settings": {"anything": "authref://vault/kv/x#y"}}`, "", ""},
		{"bad authref anywhere", `{"settings": {"anything": "authref://vault/kv/x"}}`, "config.settings.anything", "#field"},
		{"by name password", `{"password": "hunter2"}`, "config.password", "by its field name"},
		{"by name api_key", `{"api_key": "abc"}`, "config.api_key", "by its field name"},
		{"by name clientSecret nested", `{"oauth": {"clientSecret": "abc"}}`, "config.oauth.clientSecret", "by its field name"},
		{"by name accessKey", `{"AccessKey": "abc"}`, "config.AccessKey", "by its field name"},
		{"by name numeric token", `{"token": 123456}`, "config.token", "by its field name"},
		{"under credentials", `{"credentials": {"user": "bob", "pass": "x"}}`, "config.credentials.pass", "by its field name"},
		{"by name in array", `{"tokens": ["abc"]}`, "config.tokens[0]", "by its field name"},
		{"github token in description", `{"description": "use ` + ghToken + ` for now"}`, "config.description", "looks like a GitHub token"},
		{"gitlab token", `{"description": "` + glToken + `"}`, "config.description", "looks like a GitLab token"},
		{"aws key", `{"region": "` + awsKey + `"}`, "config.region", "looks like an AWS access key id"},
		{"slack token", `{"channel": "` + slackTok + `"}`, "config.channel", "looks like a Slack token"},
		{"jwt", `{"note": "` + jwt + `"}`, "config.note", "looks like a JSON Web Token"},
		{"pem", `{"ca": ` + q(pem) + `}`, "config.ca", "looks like a PEM private key"},
		{"high entropy", `{"label": "` + randKey + `"}`, "config.label", "looks like a random key"},
		{"in array of objects", `{"hosts": [{"url": "https://ghe.example.com"}, {"url": "` + ghToken + `"}]}`, "config.hosts[1].url", "GitHub token"},
		{"x-secret nested plain", `{"auth": {"key": "plain"}}`, "config.auth.key", "must be an AuthRef URI"},
		{"url field egress", `{"apiUrl": "https://169.254.169.254/"}`, "config.apiUrl", "egress policy"},
		{"format uri egress", `{"mirror": "https://10.0.0.1/"}`, "config.mirror", "egress policy"},
		{"url in array egress", `{"hosts": [{"url": "https://localhost/"}]}`, "config.hosts[0].url", "egress policy"},
		{"odd key quoted", `{"x y": {"secret": "s"}}`, `config["x y"].secret`, "by its field name"},
	}
	c := checker(t)
	run := func(t *testing.T, typ string, schema json.RawMessage, config, authRef, field, reason string) {
		t.Helper()
		err := c.Check(context.Background(), typ, schema, json.RawMessage(config), authRef)
		if field == "" {
			if err != nil {
				t.Fatalf("Check = %v, want accepted", err)
			}
			return
		}
		var fes configcheck.FieldErrors
		if !errors.As(err, &fes) {
			t.Fatalf("Check = %v (%T), want FieldErrors", err, err)
		}
		var fe *configcheck.FieldError
		if !errors.As(err, &fe) {
			t.Fatal("errors.As(*FieldError) fails")
		}
		for _, fe := range fes {
			if fe.Field == field {
				if !strings.Contains(fe.Reason, reason) {
					t.Fatalf("%s: %q, want it to say %q", field, fe.Reason, reason)
				}
				return
			}
		}
		t.Fatalf("Check = %v, want an error on %s", err, field)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var schema json.RawMessage
			if tt.typ == "registry.oci" { // the stored copy, as the catalog passes it
				b, _ := schemas.ConfigSchema(tt.typ)
				schema = b
			}
			run(t, tt.typ, schema, tt.config, tt.authRef, tt.field, tt.reason)
		})
	}
	for _, tt := range plugin {
		t.Run(tt.name, func(t *testing.T) {
			run(t, "plugin.example", open, tt.config, "", tt.field, tt.reason)
		})
	}
}

func q(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// No error message quotes the secret it refuses.
func TestErrorsNeverEchoSecrets(t *testing.T) {
	c := checker(t)
	secrets := []string{ghToken, glToken, awsKey, slackTok, jwt, pem, randKey, "hunter2-Pa55w0rd!", "https://user:Sup3rS3cret@ghe.example.com"}
	schema := json.RawMessage(`{"type": "object", "properties": {"k": {"type": "string", "x-secret": true}, "n": {"type": "integer", "maxLength": 3}}}`)
	refused := 0
	for _, s := range secrets {
		for _, config := range []string{
			`{"description": ` + q(s) + `}`,
			`{"password": ` + q(s) + `}`,
			`{"k": ` + q(s) + `}`,
			`{"n": ` + q(s) + `}`,
			`{"endpoint": ` + q(s) + `}`,
			`{"k": ` + q("authref://vault/"+s) + `}`,
		} {
			for _, authRef := range []string{"", s, "authref://env/" + s} {
				err := c.Check(context.Background(), "plugin.example", schema, json.RawMessage(config), authRef)
				if err == nil {
					continue // a weak password in free text is not recognisable
				}
				refused++
				msg := err.Error()
				for _, part := range []string{s, "Sup3rS3cret", "hunter2", "IOSFODNN7", "aB3dE5fG7h", "MIIEow"} {
					if strings.Contains(s, part) && strings.Contains(msg, part) {
						t.Errorf("error %q echoes the secret", msg)
					}
				}
			}
		}
	}
	if refused < 150 {
		t.Errorf("only %d of 162 configs refused", refused)
	}
}

type countingResolver struct {
	mu sync.Mutex
	n  int
}

func (r *countingResolver) LookupNetIP(_ context.Context, _, _ string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	return nil, &net.DNSError{Err: "server misbehaving", IsTemporary: true}
}

// A resolver failure is the hub's problem, not a refusal of the config.
func TestResolverFailureIsNotAFieldError(t *testing.T) {
	r := &countingResolver{}
	c, err := configcheck.New(egress.Policy{}, r)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Check(context.Background(), "registry.oci", nil, json.RawMessage(`{"endpoint": "https://registry.example.com"}`), "")
	var fe *configcheck.FieldError
	if err == nil || errors.As(err, &fe) {
		t.Fatalf("Check = %v, want a non-field error", err)
	}
	if r.n != 1 {
		t.Errorf("resolver called %d times", r.n)
	}
}

func TestNew(t *testing.T) {
	if _, err := configcheck.New(egress.Policy{}, nil); err == nil || !strings.Contains(err.Error(), "net.DefaultResolver") {
		t.Fatalf("New(nil resolver) = %v", err)
	}
}

// A stored schema that does not compile is the hub's fault.
func TestBrokenSchema(t *testing.T) {
	err := checker(t).Check(context.Background(), "x.y", json.RawMessage(`{"type": 5}`), json.RawMessage(`{}`), "")
	var fe *configcheck.FieldError
	if err == nil || errors.As(err, &fe) {
		t.Fatalf("Check = %v, want a non-field error", err)
	}
}

// Concurrent checks share the compiled-schema cache safely.
func TestConcurrentChecks(t *testing.T) {
	c := checker(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			schema := json.RawMessage(`{"type": "object", "properties": {"n": {"type": "integer", "maximum": ` + string(rune('0'+i%4)) + `}}}`)
			errs <- c.Check(context.Background(), "x.y", schema, json.RawMessage(`{"n": 0}`), "")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
