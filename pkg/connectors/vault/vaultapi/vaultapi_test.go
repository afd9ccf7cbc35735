package vaultapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors/vault/vaultapi"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func token(context.Context) (string, error) { return "hvs.t", nil }

func TestNew(t *testing.T) {
	creds := func(context.Context) (string, string, error) { return "r", "s", nil }
	for _, tt := range []struct {
		name string
		cfg  vaultapi.Config
		says string
	}{
		{"no address", vaultapi.Config{Token: token}, "no address"},
		{"scheme", vaultapi.Config{Address: "ftp://v", Token: token}, "http(s)"},
		{"userinfo", vaultapi.Config{Address: "https://u:p@v", Token: token}, "userinfo"},
		{"both", vaultapi.Config{Address: "https://v", Token: token, AppRole: &vaultapi.AppRole{Credentials: creds}}, "not both"},
		{"mount", vaultapi.Config{Address: "https://v", AppRole: &vaultapi.AppRole{Mount: "../x", Credentials: creds}}, "mount"},
		{"namespace", vaultapi.Config{Address: "https://v", Token: token, Namespace: "a//b"}, "namespace"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vaultapi.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.says) || fault.ClassOf(err) != fault.ClassPermanent {
				t.Errorf("New = %v, want a permanent error saying %q", err, tt.says)
			}
		})
	}
}

// An old Vault answers the mount table at the top level only.
func TestMountsTopLevel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Vault-Token") != "hvs.t" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte(`{"secret/":{"type":"kv","options":{"version":"2"}},"old/":{"type":"generic","options":null},
			"sys/":{"type":"system"},"request_id":"x","lease_duration":0}`))
	}))
	t.Cleanup(srv.Close)
	c, err := vaultapi.New(vaultapi.Config{Address: srv.URL, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ms, err := c.Mounts(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.Path+":"+m.Type+":"+string(rune('0'+m.Version)))
	}
	if strings.Join(got, " ") != "old:generic:1 secret:kv:2 sys:system:0" {
		t.Errorf("mounts %v", got)
	}
}

// A redirect to another host would carry the token there.
func TestRedirectElsewhereRefused(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the other host got a request with token %q", r.Header.Get("X-Vault-Token"))
	}))
	t.Cleanup(other.Close)
	srv := httptest.NewServer(http.RedirectHandler(strings.Replace(other.URL, "127.0.0.1", "localhost", 1)+"/v1/sys/mounts", http.StatusTemporaryRedirect))
	t.Cleanup(srv.Close)
	c, _ := vaultapi.New(vaultapi.Config{Address: srv.URL, Token: token})
	t.Cleanup(c.Close)
	_, err := c.Mounts(t.Context())
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("%v (class %v)", err, fault.ClassOf(err))
	}
}
