package vault_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/vault"
	"inthub.dev/pkg/connectors/vault/vaulttest"
	"inthub.dev/pkg/fault"
)

// secrets is a SecretResolver over a map of AuthRef → value.
type secrets map[string]string

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	v, ok := s[ref]
	if !ok {
		return nil, fault.Permanentf("no such secret %s", ref)
	}
	return []byte(v), nil
}

const (
	tokenRef  = "authref://env/VAULT_TOKEN"
	roleRef   = "authref://env/VAULT_ROLE_ID"
	secretRef = "authref://env/VAULT_SECRET_ID"
)

func tokenAuth() map[string]any { return map[string]any{"token": tokenRef} }
func appRoleAuth() map[string]any {
	return map[string]any{"roleId": roleRef, "secretId": secretRef}
}

func newConnector(t *testing.T, address string, auth map[string]any, sec secrets, extra map[string]any) *vault.Connector {
	t.Helper()
	conf := map[string]any{"address": address, "auth": auth, "timeoutSeconds": int(conntest.Timeout / time.Second)}
	for k, v := range extra {
		conf[k] = v
	}
	raw, _ := json.Marshal(conf)
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(hc.CloseIdleConnections)
	c, err := vault.New(connectors.Config{IntegrationID: "i-1", TenantID: "t-1", Type: vault.Type, Config: raw, Secrets: sec, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// goodSecrets resolves the fake's credentials.
func goodSecrets(fv *vaulttest.Server) secrets {
	o := fv.Options()
	return secrets{tokenRef: vaulttest.RootToken, roleRef: o.RoleID, secretRef: o.SecretID}
}

type harness struct {
	auth      func() map[string]any
	namespace string
}

func (harness) Capabilities() []string { return nil }

func (harness) Secrets() []string {
	return []string{vaulttest.RootToken, "secret-1", "hvs.approle-1", "hvs.approle-2"}
}

func (h harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	fv := vaulttest.New(t, vaulttest.Options{AppRoleReadMounts: true, Namespace: h.namespace})
	sec := goodSecrets(fv)
	addr := fv.URL
	var extra map[string]any
	if h.namespace != "" {
		extra = map[string]any{"namespace": h.namespace}
	}
	switch sc {
	case conntest.BadCredentials:
		sec = secrets{tokenRef: "hvs.wrong", roleRef: "role-1", secretRef: "wrong"}
	case conntest.Unreachable:
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = "http://" + l.Addr().String()
		l.Close()
	case conntest.Slow:
		fv.Fail(vaulttest.Fault{Slow: true})
	case conntest.RateLimited:
		fv.Fail(vaulttest.Fault{Status: http.StatusTooManyRequests, RetryAfter: 3 * time.Second})
	case conntest.ServerError:
		fv.Fail(vaulttest.Fault{Status: http.StatusInternalServerError})
	}
	return newConnector(t, addr, h.auth(), sec, extra)
}

func TestConformance(t *testing.T) {
	t.Run("token", func(t *testing.T) { conntest.Run(t, harness{auth: tokenAuth}) })
	t.Run("approle", func(t *testing.T) { conntest.Run(t, harness{auth: appRoleAuth}) })
	t.Run("approle in a namespace", func(t *testing.T) { conntest.Run(t, harness{auth: appRoleAuth, namespace: "team-a/ci"}) })
}

func check(t *testing.T, r connectors.Result, capability string) connectors.Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Capability == capability {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", capability, r.Checks)
	return connectors.Check{}
}

// TestStates holds each sys/health answer to what it means for the
// integration.
func TestStates(t *testing.T) {
	for _, tt := range []struct {
		state  vaulttest.State
		status connectors.Status
		class  fault.Class
		detail string
		says   string
	}{
		{vaulttest.Active, connectors.StatusHealthy, fault.ClassUnknown, "active", "active, unsealed"},
		{vaulttest.Standby, connectors.StatusHealthy, fault.ClassUnknown, "standby", "forwarded"},
		{vaulttest.PerfStandby, connectors.StatusHealthy, fault.ClassUnknown, "performance_standby", "performance standby"},
		{vaulttest.DRSecondary, connectors.StatusUnhealthy, fault.ClassPermanent, "dr_secondary", "disaster-recovery secondary"},
		{vaulttest.NotInitialized, connectors.StatusUnhealthy, fault.ClassPermanent, "not_initialized", "not initialised"},
		{vaulttest.Sealed, connectors.StatusUnhealthy, fault.ClassOffline, "sealed", "vault operator unseal"},
	} {
		t.Run(tt.detail, func(t *testing.T) {
			fv := vaulttest.New(t, vaulttest.Options{})
			fv.SetState(tt.state)
			c := newConnector(t, fv.URL, tokenAuth(), goodSecrets(fv), nil)
			for name, call := range map[string]func(context.Context) connectors.Result{"test": c.TestConnection, "health": c.CheckHealth} {
				r := call(t.Context())
				if r.Status != tt.status || r.Class != tt.class {
					t.Errorf("%s: %s/%v, want %s/%v: %s", name, r.Status, r.Class, tt.status, tt.class, r.Message)
				}
				if r.Details["state"] != tt.detail {
					t.Errorf("%s: state %q, want %q", name, r.Details["state"], tt.detail)
				}
				if h := check(t, r, vault.CheckHealth); !strings.Contains(h.Message, tt.says) {
					t.Errorf("%s: health says %q, want %q in it", name, h.Message, tt.says)
				}
			}
			if tt.status != connectors.StatusHealthy && fv.Requests("/v1/auth/token/lookup-self") != 0 {
				t.Error("the token was looked up on a node that cannot serve")
			}
		})
	}
}

func TestTestConnection(t *testing.T) {
	fv := vaulttest.New(t, vaulttest.Options{})
	fv.Mount("team/kv", "kv", 2)
	fv.Mount("transit", "transit", 0)

	t.Run("token", func(t *testing.T) {
		c := newConnector(t, fv.URL, tokenAuth(), goodSecrets(fv), nil)
		r := c.TestConnection(t.Context())
		if r.Status != connectors.StatusHealthy {
			t.Fatalf("%s: %s", r.Status, r.Message)
		}
		for _, cp := range []string{vault.CheckHealth, vault.CheckSeal, vault.CheckAuth, vault.CheckToken, vault.CheckKVMounts} {
			if !check(t, r, cp).OK {
				t.Errorf("check %s failed", cp)
			}
		}
		if got := r.Details["kvMounts"]; got != "legacy (v1),secret (v2),team/kv (v2)" {
			t.Errorf("kvMounts = %q", got)
		}
		if r.Details["policies"] != "root" || r.Details["ttl"] != "none" {
			t.Errorf("token details %v", r.Details)
		}
		if !strings.Contains(check(t, r, vault.CheckSeal).Message, "threshold 3 of 5") {
			t.Errorf("seal: %s", check(t, r, vault.CheckSeal).Message)
		}
	})

	t.Run("approle", func(t *testing.T) {
		fv := vaulttest.New(t, vaulttest.Options{AppRoleReadMounts: true})
		c := newConnector(t, fv.URL, appRoleAuth(), goodSecrets(fv), nil)
		r := c.TestConnection(t.Context())
		if r.Status != connectors.StatusHealthy {
			t.Fatalf("%s: %s", r.Status, r.Message)
		}
		if ck := check(t, r, vault.CheckAuth); !ck.OK || !strings.Contains(ck.Message, "auth/approle") {
			t.Errorf("auth: %+v", ck)
		}
		if fv.Logins() != 1 {
			t.Errorf("%d logins, want 1", fv.Logins())
		}
		if r.CredentialExpiry == nil || r.Details["renewable"] != "true" || r.Details["policies"] != "default,inthub" {
			t.Errorf("expiry %v, details %v", r.CredentialExpiry, r.Details)
		}
		// Health reuses the token of the login.
		if h := c.CheckHealth(t.Context()); h.Status != connectors.StatusHealthy || fv.Logins() != 1 {
			t.Errorf("health %s (%s), %d logins", h.Status, h.Message, fv.Logins())
		}
	})

	t.Run("approle without read on sys/mounts", func(t *testing.T) {
		c := newConnector(t, fv.URL, appRoleAuth(), goodSecrets(fv), nil)
		r := c.TestConnection(t.Context())
		// Discovery fails, the rest works.
		if r.Status != connectors.StatusDegraded || r.Class != fault.ClassPermanent {
			t.Fatalf("%s/%v: %s", r.Status, r.Class, r.Message)
		}
		if ck := check(t, r, vault.CheckKVMounts); ck.OK || !strings.Contains(ck.Message, "read on sys/mounts") {
			t.Errorf("kv_mounts: %+v", ck)
		}
	})

	t.Run("short-lived token", func(t *testing.T) {
		fv.AddToken("hvs.short", vaulttest.Token{Policies: []string{"ci"}, TTL: time.Hour})
		c := newConnector(t, fv.URL, tokenAuth(), secrets{tokenRef: "hvs.short"}, nil)
		r := c.CheckHealth(t.Context())
		if r.Status != connectors.StatusDegraded || !strings.Contains(r.Message, "cannot be renewed") {
			t.Errorf("%s: %s", r.Status, r.Message)
		}
		if r.CredentialExpiry == nil || time.Until(*r.CredentialExpiry) > time.Hour {
			t.Errorf("expiry %v", r.CredentialExpiry)
		}
	})
}

func TestAuthFailures(t *testing.T) {
	fv := vaulttest.New(t, vaulttest.Options{Namespace: "team-a"})
	good := goodSecrets(fv)
	for _, tt := range []struct {
		name    string
		auth    map[string]any
		sec     secrets
		extra   map[string]any
		class   fault.Class
		failing string
		says    string
	}{
		{"wrong token", tokenAuth(), secrets{tokenRef: "hvs.nope"}, map[string]any{"namespace": "team-a"}, fault.ClassPermanent, vault.CheckToken, "permission denied"},
		{"no namespace", tokenAuth(), good, nil, fault.ClassPermanent, vault.CheckToken, "403"},
		{"wrong namespace", tokenAuth(), good, map[string]any{"namespace": "team-b"}, fault.ClassPermanent, vault.CheckToken, "403"},
		{"wrong secret id", appRoleAuth(), secrets{roleRef: "role-1", secretRef: "nope"}, map[string]any{"namespace": "team-a"}, fault.ClassPermanent, vault.CheckAuth, "secret id is wrong"},
		{"wrong mount", map[string]any{"roleId": roleRef, "secretId": secretRef, "mount": "ci"}, good, map[string]any{"namespace": "team-a"}, fault.ClassPermanent, vault.CheckAuth, "auth/ci"},
		{"unresolvable token", tokenAuth(), secrets{}, map[string]any{"namespace": "team-a"}, fault.ClassPermanent, vault.CheckToken, "cannot resolve auth.token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newConnector(t, fv.URL, tt.auth, tt.sec, tt.extra)
			r := c.TestConnection(t.Context())
			if r.Status != connectors.StatusUnhealthy || r.Class != tt.class {
				t.Fatalf("%s/%v: %s", r.Status, r.Class, r.Message)
			}
			ck := check(t, r, tt.failing)
			if ck.OK || !strings.Contains(ck.Message, tt.says) {
				t.Errorf("%s: %q, want %q in it", tt.failing, ck.Message, tt.says)
			}
			if strings.Contains(r.Message, vaulttest.RootToken) {
				t.Error("the message holds the token")
			}
		})
	}
	t.Run("namespace", func(t *testing.T) {
		c := newConnector(t, fv.URL, appRoleAuth(), good, map[string]any{"namespace": "team-a"})
		if r := c.TestConnection(t.Context()); !check(t, r, vault.CheckToken).OK {
			t.Errorf("%s: %s", r.Status, r.Message)
		}
	})
}

func TestListKVMounts(t *testing.T) {
	fv := vaulttest.New(t, vaulttest.Options{})
	for _, m := range []string{"a", "b", "c/d", "e"} {
		fv.Mount(m, "kv", 1)
	}
	c := newConnector(t, fv.URL, tokenAuth(), goodSecrets(fv), nil)
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("the pages do not end")
		}
		p, err := c.ListKVMounts(t.Context(), connectors.ListOptions{Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Items) > 2 {
			t.Fatalf("%d items on a page of 2", len(p.Items))
		}
		for _, m := range p.Items {
			got = append(got, m.Path+"@"+string(rune('0'+m.Version)))
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	want := "a@1 b@1 c/d@1 e@1 legacy@1 secret@2"
	if strings.Join(got, " ") != want {
		t.Errorf("mounts %v, want %s (pki left out)", got, want)
	}

	t.Run("forbidden", func(t *testing.T) {
		fv.AddToken("hvs.nomounts", vaulttest.Token{Policies: []string{"default"}})
		c := newConnector(t, fv.URL, tokenAuth(), secrets{tokenRef: "hvs.nomounts"}, nil)
		_, err := c.ListKVMounts(t.Context(), connectors.ListOptions{})
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "read on sys/mounts") {
			t.Errorf("%v (class %v)", err, fault.ClassOf(err))
		}
	})
	t.Run("sealed", func(t *testing.T) {
		fv.SetState(vaulttest.Sealed)
		defer fv.SetState(vaulttest.Active)
		_, err := c.ListKVMounts(t.Context(), connectors.ListOptions{})
		if fault.ClassOf(err) != fault.ClassTransient || !strings.Contains(err.Error(), "sealed") {
			t.Errorf("%v (class %v)", err, fault.ClassOf(err))
		}
	})
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		conf string
		says string
	}{
		{"empty", ``, "address and auth are required"},
		{"unknown field", `{"address":"https://v","auth":{"token":"authref://env/T"},"tokne":1}`, "unknown field"},
		{"no auth", `{"address":"https://v","auth":{}}`, "auth: set token"},
		{"both", `{"address":"https://v","auth":{"token":"authref://env/T","roleId":"authref://env/R"}}`, "not both"},
		{"secret in clear", `{"address":"https://v","auth":{"token":"hvs.CAESIabc"}}`, "auth.token"},
		{"secret id alone", `{"address":"https://v","auth":{"secretId":"authref://env/S"}}`, "auth: set token"},
		{"bad address", `{"address":"ftp://v","auth":{"token":"authref://env/T"}}`, "http(s) URL"},
		{"bad namespace", `{"address":"https://v","namespace":"../x","auth":{"token":"authref://env/T"}}`, "namespace"},
		{"bad ca", `{"address":"https://v","caCert":"nope","auth":{"token":"authref://env/T"}}`, "caCert"},
		{"bad probe", `{"address":"https://v","probeSecret":"secret","auth":{"token":"authref://env/T"}}`, "probeSecret"},
		{"timeout", `{"address":"https://v","timeoutSeconds":0.5,"auth":{"token":"authref://env/T"}}`, "timeoutSeconds"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := vault.New(connectors.Config{Type: vault.Type, Config: json.RawMessage(tt.conf)})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.says) || fault.ClassOf(err) != fault.ClassPermanent {
				t.Fatalf("Validate = %v, want a permanent error saying %q", err, tt.says)
			}
			if strings.Contains(err.Error(), "hvs.CAESIabc") {
				t.Error("the error quotes the secret")
			}
			if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusUnhealthy || !errors.Is(r.Err, err) && r.Message == "" {
				t.Errorf("health of an invalid config: %s %s", r.Status, r.Message)
			}
		})
	}
	t.Run("authRef is the token", func(t *testing.T) {
		fv := vaulttest.New(t, vaulttest.Options{})
		hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		t.Cleanup(hc.CloseIdleConnections)
		c, _ := vault.New(connectors.Config{Type: vault.Type, Config: json.RawMessage(`{"address":"` + fv.URL + `","auth":{}}`),
			AuthRef: tokenRef, Secrets: goodSecrets(fv), HTTPClient: hc})
		if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusHealthy {
			t.Errorf("%s: %s", r.Status, r.Message)
		}
	})
}

func TestRegistered(t *testing.T) {
	info, ok := connectors.Default().Lookup(vault.Type)
	if !ok || info.Provider != "vault" || len(info.ConfigSchema) == 0 {
		t.Fatalf("Lookup = %+v, %v", info, ok)
	}
}

func TestProbeSecret(t *testing.T) {
	fv := vaulttest.New(t, vaulttest.Options{})
	fv.Mount("team/kv", "kv", 1)
	fv.Put("secret", "inthub/github", map[string]any{"token": "ghs_probeValue", "appId": 1})
	fv.Put("legacy", "inthub/gitlab", map[string]any{"token": "glpat-probeValue"})
	fv.Put("team/kv", "ci/key", map[string]any{"k": "nested-probeValue"})
	fv.AddToken("hvs.github-only", vaulttest.Token{KVPaths: []string{"secret/inthub/github"}})
	fv.AddToken("hvs.other", vaulttest.Token{KVPaths: []string{"secret/other"}})
	for _, tt := range []struct {
		name, probe, token string
		ok                 bool
		says               string
	}{
		{"kv v2", "secret/inthub/github", vaulttest.RootToken, true, "secret/inthub/github (KV v2) readable: 2 fields"},
		{"kv v1", "legacy/inthub/gitlab", vaulttest.RootToken, true, "(KV v1) readable: 1 fields"},
		{"nested mount", "team/kv/ci/key", vaulttest.RootToken, true, "team/kv/ci/key (KV v1)"},
		// Without read on sys/mounts the mount is the first segment, KV v2.
		{"no mount listing", "secret/inthub/github", "hvs.github-only", true, "(KV v2) readable"},
		{"missing", "secret/inthub/nope", vaulttest.RootToken, false, "404"},
		{"forbidden", "secret/inthub/github", "hvs.other", false, "needs read on secret/inthub/github"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newConnector(t, fv.URL, tokenAuth(), secrets{tokenRef: tt.token}, map[string]any{"probeSecret": tt.probe})
			for name, call := range map[string]func(context.Context) connectors.Result{"test": c.TestConnection, "health": c.CheckHealth} {
				r := call(t.Context())
				ck := check(t, r, vault.CheckKVRead)
				if ck.OK != tt.ok || !strings.Contains(ck.Message, tt.says) {
					t.Errorf("%s: kv_read %v %q, want %v with %q", name, ck.OK, ck.Message, tt.ok, tt.says)
				}
				if !tt.ok && (r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassPermanent) {
					t.Errorf("%s: %s/%v, want unhealthy and permanent", name, r.Status, r.Class)
				}
				for _, c := range r.Checks {
					if strings.Contains(c.Message, "probeValue") {
						t.Errorf("%s: check %s shows a secret value: %s", name, c.Capability, c.Message)
					}
				}
			}
		})
	}
}

func TestCACert(t *testing.T) {
	fv := vaulttest.New(t, vaulttest.Options{})
	target, _ := url.Parse(fv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = fv.Client().Transport
	tlsSrv := httptest.NewTLSServer(proxy)
	t.Cleanup(tlsSrv.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}))

	t.Run("without the CA", func(t *testing.T) {
		c := newConnector(t, tlsSrv.URL, tokenAuth(), goodSecrets(fv), nil)
		r := c.CheckHealth(t.Context())
		if r.Status != connectors.StatusUnhealthy || r.Class != fault.ClassPermanent || !strings.Contains(r.Message, "configure its CA") {
			t.Errorf("%s/%v: %s", r.Status, r.Class, r.Message)
		}
	})
	t.Run("with the CA", func(t *testing.T) {
		c := newConnector(t, tlsSrv.URL, tokenAuth(), goodSecrets(fv), map[string]any{"caCert": caPEM})
		if r := c.TestConnection(t.Context()); r.Status != connectors.StatusHealthy {
			t.Errorf("%s: %s", r.Status, r.Message)
		}
	})
	t.Run("plain http with a CA", func(t *testing.T) {
		c := newConnector(t, fv.URL, tokenAuth(), goodSecrets(fv), map[string]any{"caCert": caPEM})
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "plain http") {
			t.Errorf("Validate: %v", err)
		}
	})
}
