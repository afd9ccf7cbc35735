package cli_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors/vault/vaulttest"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/internal/cli"
)

var vaultCmd = cli.Command{Name: "x", Head: "Usage: x\n", Options: cli.VaultFlags()}

// resolverFrom builds a service's resolver from command-line arguments, as
// the binaries do: Parse, Values.Vault, cli.Resolver.
func resolverFrom(t *testing.T, args ...string) (*authref.Resolver, error) {
	t.Helper()
	v, err := vaultCmd.Parse(args, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	vc, err := v.Vault()
	if err != nil {
		return nil, err
	}
	r := cli.Resolver(vc, nil)
	t.Cleanup(r.Close)
	return r, nil
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func resolve(t *testing.T, r *authref.Resolver, ref string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := r.Resolve(ctx, ref)
	return string(b), err
}

// AppRole from the flags: the role id on the command line, the secret id
// from a file; the secret read from a KV v2 mount in a namespace, and
// from a KV v1 mount named by --vault-kv1-mounts.
func TestVaultAppRoleFromFlags(t *testing.T) {
	fake := vaulttest.New(t, vaulttest.Options{Namespace: "team-a", RoleID: "role-7", SecretID: "secret-id-7f3a"})
	fake.Put("secret", "inthub/github", map[string]any{"token": "ghp-from-vault"})
	fake.Put("legacy", "inthub/gitlab", map[string]any{"token": "glpat-from-vault"})
	r, err := resolverFrom(t, "--vault-addr", fake.URL, "--vault-namespace", "team-a",
		"--vault-approle-role-id", "role-7", "--vault-approle-secret-id-file", writeFile(t, "secret-id-7f3a\n"),
		"--vault-kv1-mounts", "legacy")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := resolve(t, r, "authref://vault/secret/inthub/github#token"); err != nil || got != "ghp-from-vault" {
		t.Fatalf("kv2: %q, %v", got, err)
	}
	if got, err := resolve(t, r, "authref://vault/legacy/inthub/gitlab#token"); err != nil || got != "glpat-from-vault" {
		t.Fatalf("kv1: %q, %v", got, err)
	}
	if n := fake.Logins(); n != 1 {
		t.Errorf("%d AppRole logins, want 1 (the token is kept)", n)
	}
}

// A wrong secret id is not known before Vault is asked: the service
// starts, and the first read fails permanent, saying what is wrong and
// never what the secret id is.
func TestVaultBadSecretIDFailsAtFirstUse(t *testing.T) {
	fake := vaulttest.New(t, vaulttest.Options{})
	fake.Put("secret", "inthub/github", map[string]any{"token": "ghp-from-vault"})
	r, err := resolverFrom(t, "--vault-addr", fake.URL,
		"--vault-approle-role-id", fake.Options().RoleID, "--vault-approle-secret-id-file", writeFile(t, "stale-9c1e"))
	if err != nil {
		t.Fatalf("a wrong secret id is not a start-up error (Vault may be down then): %v", err)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("Validate = %v", err)
	}
	got, err := resolve(t, r, "authref://vault/secret/inthub/github#token")
	if err == nil {
		t.Fatalf("resolved %q with a wrong secret id", got)
	}
	msg := err.Error()
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(msg, "auth/approle") ||
		!strings.Contains(msg, "role id or secret id is wrong") {
		t.Errorf("error %q (class %v): want a permanent error naming the AppRole login and the cause", msg, fault.ClassOf(err))
	}
	if strings.Contains(msg, "stale-9c1e") {
		t.Errorf("error %q holds the secret id", msg)
	}
}

// A token file, from the environment, is read again at each read of
// Vault (the resolver caches nothing here: TTL 60s, so a new reference).
func TestVaultTokenFileFromEnv(t *testing.T) {
	fake := vaulttest.New(t, vaulttest.Options{})
	fake.Put("secret", "a", map[string]any{"v": "one"})
	fake.AddToken("hvs.from-file", vaulttest.Token{})
	t.Setenv("INTHUB_VAULT_ADDR", fake.URL)
	t.Setenv("INTHUB_VAULT_TOKEN_FILE", writeFile(t, "hvs.from-file\n"))
	r, err := resolverFrom(t)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := resolve(t, r, "authref://vault/secret/a#v"); err != nil || got != "one" {
		t.Fatalf("%q, %v", got, err)
	}
}

// --vault-ca-cert: Vault's certificate is checked against that CA only.
func TestVaultCACert(t *testing.T) {
	fake := vaulttest.New(t, vaulttest.Options{})
	fake.Put("secret", "a", map[string]any{"v": "over-tls"})
	tlsSrv := httptest.NewTLSServer(fake.Config.Handler)
	t.Cleanup(tlsSrv.Close)
	ca := writeFile(t, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})))
	token := writeFile(t, vaulttest.RootToken)

	r, err := resolverFrom(t, "--vault-addr", tlsSrv.URL, "--vault-token-file", token, "--vault-ca-cert", ca)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := resolve(t, r, "authref://vault/secret/a#v"); err != nil || got != "over-tls" {
		t.Fatalf("with the CA: %q, %v", got, err)
	}
	r, err = resolverFrom(t, "--vault-addr", tlsSrv.URL, "--vault-token-file", token)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := resolve(t, r, "authref://vault/secret/a#v"); err == nil {
		t.Fatalf("without the CA the fake's certificate was trusted: %q", got)
	}
}

func TestVaultUsageErrors(t *testing.T) {
	token := writeFile(t, "hvs.x")
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"auth without address", []string{"--vault-token-file", token}, "needs --vault-addr"},
		{"address without auth", []string{"--vault-addr", "https://vault:8200"}, "say how to log in"},
		{"two ways to log in", []string{"--vault-addr", "https://vault:8200", "--vault-token-file", token, "--vault-approle-role-id", "r"}, "not both"},
		{"secret id without role", []string{"--vault-addr", "https://vault:8200", "--vault-token-file", token, "--vault-approle-secret-id-file", token}, "needs --vault-approle-role-id"},
		{"token file missing", []string{"--vault-addr", "https://vault:8200", "--vault-token-file", missing}, "no such file"},
		{"secret id file missing", []string{"--vault-addr", "https://vault:8200", "--vault-approle-role-id", "r", "--vault-approle-secret-id-file", missing}, "no such file"},
		{"CA not PEM", []string{"--vault-addr", "https://vault:8200", "--vault-token-file", token, "--vault-ca-cert", token}, "no PEM certificate"},
		{"address not http", []string{"--vault-addr", "vault:8200", "--vault-token-file", token}, "http(s) URL"},
		{"bad KV1 mount", []string{"--vault-addr", "https://vault:8200", "--vault-token-file", token, "--vault-kv1-mounts", "a b"}, "KV1Mounts"},
		{"bad namespace", []string{"--vault-addr", "https://vault:8200", "--vault-token-file", token, "--vault-namespace", "a b"}, "namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resolverFrom(t, tc.args...)
			if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v (exit %d); want a usage error containing %q", err, cli.ExitCode(err), tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "hvs.x") {
				t.Errorf("%v holds the token", err)
			}
		})
	}
	// No Vault at all is fine: vault references then fail, clearly.
	r, err := resolverFrom(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resolve(t, r, "authref://vault/secret/a#v"); err == nil || !strings.Contains(err.Error(), "no Vault is configured") {
		t.Errorf("without --vault-addr: %v", err)
	}
}
