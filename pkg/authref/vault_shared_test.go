package authref_test

import (
	"strings"
	"testing"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors/vault/vaulttest"
	"inthub.dev/pkg/fault"
)

// TestVaultSharedFake resolves references against the fake Vault of the
// vault.hashicorp connector (vaulttest): the same client, the same fake,
// so the resolver and the connector cannot drift apart on the AppRole
// flow, namespaces or the KV paths.
func TestVaultSharedFake(t *testing.T) {
	fv := vaulttest.New(t, vaulttest.Options{Namespace: "team-a"})
	o := fv.Options()
	fv.Put("secret", "inthub/github", map[string]any{"token": "ghs_v2value"})
	fv.Put("legacy", "inthub/gitlab", map[string]any{"token": "glpat-v1value"})
	fv.Put("secret", "gone", map[string]any{"token": "old"})
	fv.Delete("secret", "gone")
	lc := newLeakCheck(t, "ghs_v2value", "glpat-v1value", o.SecretID, vaulttest.RootToken)

	appRole := authref.VaultConfig{Address: fv.URL, Namespace: "team-a", KV1Mounts: []string{"legacy"},
		AppRole: &authref.AppRole{RoleID: o.RoleID, SecretID: o.SecretID}}
	r := authref.NewResolver(authref.WithVault(appRole), authref.WithTTL(0), authref.WithLogger(lc.logger()))
	t.Cleanup(r.Close)

	for _, tt := range []struct {
		name, ref, want string
		errHas          string
	}{
		{name: "kv v2 through approle", ref: "authref://vault/secret/inthub/github#token", want: "ghs_v2value"},
		{name: "kv v1 mount", ref: "authref://vault/legacy/inthub/gitlab#token", want: "glpat-v1value"},
		{name: "deleted v2 version", ref: "authref://vault/secret/gone#token", errHas: "no such secret"},
		{name: "v1 path of a v2 mount is not read as v1", ref: "authref://vault/legacy/data/inthub/gitlab#token", errHas: "404"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := r.Resolve(t.Context(), tt.ref)
			lc.err(err)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) || fault.ClassOf(err) != fault.ClassPermanent {
					t.Fatalf("err %v (class %v), want a permanent error with %q", err, fault.ClassOf(err), tt.errHas)
				}
				return
			}
			if err != nil || string(v) != tt.want {
				t.Fatalf("Resolve: %v (%d bytes)", err, len(v))
			}
		})
	}
	if n := fv.Logins(); n != 1 {
		t.Errorf("%d AppRole logins for four reads, want 1", n)
	}

	t.Run("relogin after revocation", func(t *testing.T) {
		fv.RevokeAll()
		if _, err := r.Resolve(t.Context(), "authref://vault/secret/inthub/github#token"); err != nil {
			t.Fatal(lc.err(err))
		}
		if n := fv.Logins(); n != 2 {
			t.Errorf("%d logins, want 2", n)
		}
	})
	t.Run("sealed", func(t *testing.T) {
		fv.SetState(vaulttest.Sealed)
		defer fv.SetState(vaulttest.Active)
		_, err := r.Resolve(t.Context(), "authref://vault/secret/inthub/github#token")
		if lc.err(err) == nil || fault.ClassOf(err) != fault.ClassTransient || !strings.Contains(err.Error(), "sealed") {
			t.Errorf("%v (class %v), want transient sealed", err, fault.ClassOf(err))
		}
	})
	t.Run("namespace missing", func(t *testing.T) {
		cfg := appRole
		cfg.Namespace = ""
		r := authref.NewResolver(authref.WithVault(cfg), authref.WithTTL(0), authref.WithLogger(lc.logger()))
		defer r.Close()
		_, err := r.Resolve(t.Context(), "authref://vault/secret/inthub/github#token")
		if lc.err(err) == nil || fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("%v (class %v), want permanent", err, fault.ClassOf(err))
		}
	})
	t.Run("token", func(t *testing.T) {
		r := authref.NewResolver(authref.WithVault(authref.VaultConfig{Address: fv.URL, Namespace: "team-a", Token: vaulttest.RootToken}),
			authref.WithTTL(0), authref.WithLogger(lc.logger()))
		defer r.Close()
		if v, err := r.Resolve(t.Context(), "authref://vault/secret/data/inthub/github#token"); err != nil || string(v) != "ghs_v2value" {
			t.Errorf("Resolve: %v", lc.err(err))
		}
	})
}
