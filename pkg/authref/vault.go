package authref

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"inthub.dev/pkg/connectors/vault/vaultapi"
	"inthub.dev/pkg/fault"
)

// authref://vault references are read through vaultapi, the Vault client
// that the vault.hashicorp connector uses too (one place for the token and
// AppRole flow, namespaces, KV reads and the classification of Vault's
// answers). Which Vault a reference goes to is not in the reference: it is
// the worker's, set by WithVault (the catalog's Config.Vault). A
// vault.hashicorp integration describes a Vault to check and discover; it
// does not redirect references, so a tenant's integration can never make
// the worker send its token somewhere else.

const (
	defaultVaultTimeout = vaultapi.DefaultTimeout
	defaultAppRoleMount = vaultapi.DefaultAppRoleMount
	// maxCredFile bounds a token or secret-id file.
	maxCredFile = 64 << 10
)

// VaultConfig says how to reach Vault. Exactly one of Token, TokenFile
// and AppRole authenticates.
type VaultConfig struct {
	// Address is Vault's base URL, e.g. https://vault.internal:8200.
	Address string
	// Token is a Vault token, sent as X-Vault-Token.
	Token string
	// TokenFile holds a token (e.g. a Vault Agent sink); it is read again
	// on every read of Vault, so a token rotated in the file is picked up.
	TokenFile string
	// AppRole logs in with a role id and secret id and renews the token by
	// logging in again before its lease ends, and after a 403.
	AppRole *AppRole
	// Namespace is sent as X-Vault-Namespace (Vault Enterprise, OpenBao).
	Namespace string
	// KV1Mounts are the mounts that hold KV version 1 engines; a
	// reference into any other mount is read as KV version 2.
	KV1Mounts []string
	// HTTPClient is used when set, with redirects kept to the address's
	// host (the token header would follow them).
	HTTPClient *http.Client
	// Timeout bounds one resolution (login included); 10s by default.
	Timeout time.Duration
}

// AppRole is the AppRole auth method's configuration.
type AppRole struct {
	RoleID string
	// SecretID, or SecretIDFile to read it from (read at each login).
	// Both may be empty for a role that does not bind a secret id.
	SecretID     string
	SecretIDFile string
	// Mount is where the auth method is mounted; "approle" by default.
	Mount string
}

// String keeps the token out of anything that prints a config.
func (c VaultConfig) String() string {
	auth := "none"
	switch {
	case c.Token != "":
		auth = "token"
	case c.TokenFile != "":
		auth = "token file " + c.TokenFile
	case c.AppRole != nil:
		auth = c.AppRole.String()
	}
	return fmt.Sprintf("vault %s (auth %s, namespace %q)", c.Address, auth, c.Namespace)
}

// GoString is String, for %#v.
func (c VaultConfig) GoString() string { return c.String() }

// LogValue is String, for slog.
func (c VaultConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

// String keeps the secret id out of anything that prints a config.
func (a AppRole) String() string { return "approle at auth/" + a.mountOrDefault() }

// GoString is String, for %#v.
func (a AppRole) GoString() string { return a.String() }

func (a AppRole) mountOrDefault() string {
	if a.Mount == "" {
		return defaultAppRoleMount
	}
	return a.Mount
}

type vaultClient struct {
	api *vaultapi.Client
	cfg VaultConfig
	// hc is the HTTP client whose idle connections Close releases.
	hc *http.Client
}

func newVaultClient(cfg VaultConfig, now func() time.Time, log *slog.Logger) (*vaultClient, error) {
	bad := func(format string, args ...any) (*vaultClient, error) {
		return nil, fault.Permanentf("authref: vault configuration: "+format, args...)
	}
	n := 0
	for _, set := range []bool{cfg.Token != "", cfg.TokenFile != "", cfg.AppRole != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return bad("set exactly one of Token, TokenFile and AppRole")
	}
	ac := vaultapi.Config{
		Address:    cfg.Address,
		Namespace:  cfg.Namespace,
		HTTPClient: cfg.HTTPClient,
		Timeout:    cfg.Timeout,
		Now:        now,
		Logger:     log,
	}
	switch {
	case cfg.Token != "":
		tok := cfg.Token
		ac.Token = func(context.Context) (string, error) { return tok, nil }
	case cfg.TokenFile != "":
		file := cfg.TokenFile
		ac.Token = func(context.Context) (string, error) {
			b, err := readCredFile(file, "token file")
			return string(b), err
		}
	default:
		a := *cfg.AppRole
		if a.RoleID == "" {
			return bad("AppRole needs a RoleID")
		}
		if a.SecretID != "" && a.SecretIDFile != "" {
			return bad("set SecretID or SecretIDFile, not both")
		}
		ac.AppRole = &vaultapi.AppRole{Mount: a.Mount, Credentials: func(context.Context) (string, string, error) {
			if a.SecretIDFile == "" {
				return a.RoleID, a.SecretID, nil
			}
			b, err := readCredFile(a.SecretIDFile, "AppRole secret-id file")
			return a.RoleID, string(b), err
		}}
	}
	for _, m := range cfg.KV1Mounts {
		if !vaultapi.CleanPath(m) {
			return bad("KV1Mounts: %q is not a mount path of [A-Za-z0-9._-] segments", m)
		}
	}
	if ac.HTTPClient == nil {
		ac.HTTPClient = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	api, err := vaultapi.New(ac)
	if err != nil {
		return nil, fmt.Errorf("authref: %w", err)
	}
	return &vaultClient{api: api, cfg: cfg, hc: ac.HTTPClient}, nil
}

// apiPath splits a reference's path into its mount (the first segment)
// and the secret's path. For a KV version 2 mount the path may be written
// the way the Vault CLI takes it (secret/inthub/github) or the way the
// HTTP API spells it (secret/data/inthub/github): a "data" segment right
// after the mount is read as the latter, so a secret whose own path
// starts with "data/" is written secret/data/data/....
func (c *vaultClient) apiPath(ref Ref) (mount, path string, version int, err error) {
	mount, rest, ok := strings.Cut(ref.Path, "/")
	if !ok {
		return "", "", 0, fault.Permanentf("authref: %s: a vault reference needs <mount>/<path>, e.g. secret/inthub/github#token", ref)
	}
	if slices.Contains(c.cfg.KV1Mounts, mount) {
		return mount, rest, 1, nil
	}
	if after, ok := strings.CutPrefix(rest, "data/"); ok {
		rest = after
	}
	return mount, rest, 2, nil
}

func (c *vaultClient) read(ctx context.Context, ref Ref) ([]byte, error) {
	mount, p, version, err := c.apiPath(ref)
	if err != nil {
		return nil, err
	}
	fields, err := c.api.ReadKV(ctx, mount, p, version)
	if err != nil {
		var se *vaultapi.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return nil, fault.Permanentf("authref: %s: vault answered 404 %s: no such secret (check the mount, the path, and the mount's KV version)", ref, se.What)
		}
		return nil, fmt.Errorf("authref: %s: %w", ref, err)
	}
	defer vaultapi.ClearFields(fields)
	v, err := vaultapi.Field(fields, ref.Field)
	if err != nil {
		return nil, fmt.Errorf("authref: %s: %w", ref, err)
	}
	return v, nil
}

func (c *vaultClient) dropToken() { c.api.DropToken() }

func readCredFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fault.Permanentf("authref: vault %s %s cannot be read: %w", what, path, unwrapPathError(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCredFile))
	if err != nil {
		return nil, fault.Transient(fmt.Errorf("authref: reading vault %s %s: %w", what, path, unwrapPathError(err)))
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fault.Permanentf("authref: vault %s %s is empty", what, path)
	}
	return b, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
