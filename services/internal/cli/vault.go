package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"inthub.dev/pkg/authref"
)

// VaultFlags are the options of every binary that resolves AuthRefs: the
// one Vault (or OpenBao) that authref://vault references are read from.
//
// No secret is ever a flag's value or an environment variable's: the token
// and the AppRole secret id are read from files (a Vault Agent sink, a
// mounted Kubernetes secret), again at each use, so a rotated file is
// picked up and the secret is never in the process's arguments (ps,
// /proc/<pid>/cmdline) or environment (inherited by child processes,
// dumped by crash reporters). The role id is not a secret (Vault's own
// docs treat it as a user name).
func VaultFlags() []Option {
	return []Option{
		Flag("vault-addr", "INTHUB_VAULT_ADDR", "",
			"Vault or OpenBao that authref://vault references are read from (e.g. https://vault.internal:8200); none when empty"),
		Flag("vault-token-file", "INTHUB_VAULT_TOKEN_FILE", "",
			"file holding a Vault token (e.g. a Vault Agent sink), read again at each Vault read; or use AppRole"),
		Flag("vault-approle-role-id", "INTHUB_VAULT_APPROLE_ROLE_ID", "",
			"AppRole role id (not a secret); the token comes from logging in, renewed before its lease ends"),
		Flag("vault-approle-secret-id-file", "INTHUB_VAULT_APPROLE_SECRET_ID_FILE", "",
			"file holding the AppRole secret id, read at each login; empty for a role that binds none"),
		Flag("vault-approle-mount", "INTHUB_VAULT_APPROLE_MOUNT", "approle",
			"where the AppRole auth method is mounted"),
		Flag("vault-namespace", "INTHUB_VAULT_NAMESPACE", "",
			"namespace sent as X-Vault-Namespace (Vault Enterprise, OpenBao)"),
		Flag("vault-kv1-mounts", "INTHUB_VAULT_KV1_MOUNTS", "",
			"mounts holding KV version 1 engines, comma-separated; any other mount is read as KV version 2"),
		Flag("vault-ca-cert", "INTHUB_VAULT_CACERT", "",
			"PEM file of the CA certificates that Vault's TLS certificate is checked against (default: the system's)"),
	}
}

// Vault reads the options of VaultFlags: nil without --vault-addr.
func (v Values) Vault() (*authref.VaultConfig, error) { return ParseVault(v.String) }

// ParseVault is Values.Vault for a command that parses its flags itself
// (inthub dev); get returns an option's value by name.
//
// Everything that can be checked without Vault is checked here, as usage
// errors at start: the address, exactly one way to log in, files that
// exist and can be read, the CA file, the mount names. Whether Vault
// accepts the token or the role id and secret id is known at the first
// read of a secret (the first test, health check or call that needs one):
// a service starts while Vault is down or its secret-id file is being
// rotated, and a wrong credential then fails that read, permanent, with
// "vault answered 400 logging in at auth/approle: the role id or secret
// id is wrong, ..." in the result and the log.
func ParseVault(get func(name string) string) (*authref.VaultConfig, error) {
	addr := strings.TrimSpace(get("vault-addr"))
	tokenFile, roleID := get("vault-token-file"), strings.TrimSpace(get("vault-approle-role-id"))
	secretFile := get("vault-approle-secret-id-file")
	if addr == "" {
		for _, name := range []string{"vault-token-file", "vault-approle-role-id", "vault-approle-secret-id-file", "vault-namespace", "vault-kv1-mounts", "vault-ca-cert"} {
			if get(name) != "" {
				return nil, Usagef("--%s needs --vault-addr (INTHUB_VAULT_ADDR): the Vault that authref://vault references are read from", name)
			}
		}
		return nil, nil
	}
	cfg := &authref.VaultConfig{Address: addr, Namespace: strings.TrimSpace(get("vault-namespace"))}
	switch {
	case tokenFile != "" && roleID != "":
		return nil, Usagef("--vault-token-file and --vault-approle-role-id: give one way to log in to Vault, not both")
	case tokenFile != "":
		if secretFile != "" {
			return nil, Usagef("--vault-approle-secret-id-file needs --vault-approle-role-id (and no --vault-token-file)")
		}
		if err := readable(tokenFile); err != nil {
			return nil, Usagef("--vault-token-file: %w", err)
		}
		cfg.TokenFile = tokenFile
	case roleID != "":
		if secretFile != "" {
			if err := readable(secretFile); err != nil {
				return nil, Usagef("--vault-approle-secret-id-file: %w", err)
			}
		}
		cfg.AppRole = &authref.AppRole{RoleID: roleID, SecretIDFile: secretFile, Mount: strings.Trim(get("vault-approle-mount"), "/ ")}
	default:
		return nil, Usagef("--vault-addr %s: say how to log in: --vault-token-file, or --vault-approle-role-id with --vault-approle-secret-id-file (secrets are read from files only)", addr)
	}
	for m := range strings.SplitSeq(get("vault-kv1-mounts"), ",") {
		if m = strings.Trim(m, "/ "); m != "" {
			cfg.KV1Mounts = append(cfg.KV1Mounts, m)
		}
	}
	if ca := get("vault-ca-cert"); ca != "" {
		hc, err := caClient(ca)
		if err != nil {
			return nil, Usagef("--vault-ca-cert: %w", err)
		}
		cfg.HTTPClient = hc
	}
	// The rest (the address's form, the namespace and mount names) is
	// what the resolver checks; ask it now rather than at the first read.
	r := authref.NewResolver(authref.WithVault(*cfg))
	defer r.Close()
	if err := r.Validate(); err != nil {
		return nil, Usagef("the --vault-* flags: %w", err)
	}
	return cfg, nil
}

// Resolver builds the AuthRef resolver of a service: env and file
// references, and vault ones when vault is set (ParseVault).
func Resolver(vault *authref.VaultConfig, log *slog.Logger) *authref.Resolver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []authref.Option{authref.WithLogger(log)}
	if vault != nil {
		opts = append(opts, authref.WithVault(*vault))
		log.Info("authref://vault references are read from this Vault", "vault", *vault)
	}
	return authref.NewResolver(opts...)
}

// readable checks that a credential file can be opened, without reading
// the secret: the resolver reads it at each use.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

// caClient is an HTTP client that trusts the CAs of a PEM file, and only
// those, for Vault.
func caClient(path string) (*http.Client, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}
