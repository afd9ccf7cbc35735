// Package vault is the vault.hashicorp connector: a HashiCorp Vault (or
// OpenBao) cluster, reached with a token or an AppRole whose credentials
// are AuthRefs. Test and health read the node's health (sys/health, with
// Vault's codes for standby, DR secondary, performance standby, not
// initialised and sealed), its seal status and the token's own record
// (TTL, renewability, policies); discovery lists the KV mounts.
//
// The calls go through vaultapi, the client that pkg/authref uses for
// authref://vault references too. An integration of this type does not
// change which Vault those references are read from: that is the worker's
// own Vault configuration (see pkg/authref.WithVault and docs/connectors.md).
package vault

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/strictjson"
	"inthub.dev/pkg/connectors/vault/vaultapi"
	"inthub.dev/pkg/fault"
	"inthub.dev/schemas"
)

const (
	// Type is the integration type id.
	Type = "vault.hashicorp"
	// Provider names the provider.
	Provider = "vault"

	defaultTimeout = 10 * time.Second
)

// Capabilities reported as Checks.
const (
	CheckHealth   = "health"    // sys/health: the node's state
	CheckSeal     = "seal"      // sys/seal-status
	CheckAuth     = "auth"      // an AppRole login
	CheckToken    = "token"     // auth/token/lookup-self
	CheckKVMounts = "kv_mounts" // sys/mounts, KV engines
	CheckKVRead   = "kv_read"   // the probe secret can be read
)

func init() {
	schema, err := schemas.ConfigSchema(Type)
	if err != nil {
		// The schema is embedded: its absence is a broken build.
		panic(fmt.Sprintf("vault: %v", err))
	}
	connectors.Default().Register(Info(schema), func(cfg connectors.Config) (connectors.Connector, error) { return New(cfg) })
}

// Info describes the type, for registries other than the default one.
func Info(schema []byte) connectors.Info {
	return connectors.Info{
		Type:         Type,
		Provider:     Provider,
		DisplayName:  "HashiCorp Vault",
		Description:  "A HashiCorp Vault or OpenBao cluster with a token or an AppRole: health (active, standby, sealed, ...), seal status, the token's TTL and policies, and the KV mounts.",
		Capabilities: []string{CheckHealth, CheckSeal, CheckToken, CheckKVMounts, CheckKVRead},
		ConfigSchema: schema,
	}
}

// Config is the integration's config (schemas/config/vault.hashicorp.json).
type Config struct {
	Address   string `json:"address"`
	Namespace string `json:"namespace,omitempty"`
	Auth      Auth   `json:"auth"`
	// CACert is the PEM of the CA that signed Vault's certificate, when
	// it is not one the worker trusts.
	CACert string `json:"caCert,omitempty"`
	// ProbeSecret is a KV secret ("<mount>/<path>") that test and health
	// read, to prove the token's policy reads secrets, as authref://vault
	// resolution will. Its values are dropped at once.
	ProbeSecret           string `json:"probeSecret,omitempty"`
	TimeoutSeconds        int    `json:"timeoutSeconds,omitempty"`
	HealthIntervalSeconds int    `json:"healthIntervalSeconds,omitempty"`
}

// Auth is a token or an AppRole; each secret is an AuthRef URI.
type Auth struct {
	Token    string `json:"token,omitempty"`
	RoleID   string `json:"roleId,omitempty"`
	SecretID string `json:"secretId,omitempty"`
	// Mount is where AppRole is mounted ("approle").
	Mount string `json:"mount,omitempty"`
}

func (a Auth) appRole() bool { return a.RoleID != "" }

// Connector is one Vault integration. It is safe for concurrent use.
type Connector struct {
	cfg     connectors.Config
	conf    Config
	invalid error
	timeout time.Duration
	log     *slog.Logger
	hc      *http.Client
	ownTr   *http.Transport // cloned for the CA: Close releases it
	api     *vaultapi.Client
}

var _ connectors.Connector = (*Connector)(nil)

// New builds a connector without I/O; a config that is wrong is reported
// by Validate and by every call.
func New(cfg connectors.Config) (*Connector, error) {
	c := &Connector{cfg: cfg, timeout: defaultTimeout, log: cfg.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With(slog.String("provider", Provider), slog.String("integrationId", cfg.IntegrationID),
		slog.String("tenantId", cfg.TenantID))
	c.conf, c.invalid = decode(cfg.Config)
	if c.invalid == nil {
		if c.conf.Auth == (Auth{}) && cfg.AuthRef != "" {
			// The integration's own AuthRef, when the config names no
			// credential, is a token.
			c.conf.Auth.Token = cfg.AuthRef
		}
		c.invalid = c.setup()
	}
	return c, nil
}

func decode(raw json.RawMessage) (Config, error) {
	var conf Config
	if len(bytes.TrimSpace(raw)) == 0 {
		return conf, fault.Permanentf("vault.hashicorp: the config is empty: address and auth are required")
	}
	if err := strictjson.Decode(raw, &conf); err != nil {
		return conf, fault.Permanent(fmt.Errorf("vault.hashicorp: config: %w", err))
	}
	return conf, nil
}

func (c *Connector) setup() error {
	bad := func(format string, args ...any) error {
		return fault.Permanentf("vault.hashicorp: config: "+format, args...)
	}
	a := c.conf.Auth
	switch {
	case a.Token != "" && (a.RoleID != "" || a.SecretID != ""):
		return bad("auth: set token, or roleId and secretId (AppRole), not both")
	case a.Token == "" && a.RoleID == "":
		return bad("auth: set token (a Vault token's AuthRef), or roleId and secretId (AppRole AuthRefs)")
	case a.SecretID != "" && a.RoleID == "":
		return bad("auth: secretId needs roleId")
	case a.Mount != "" && !a.appRole():
		return bad("auth: mount is the AppRole mount: it needs roleId")
	}
	for field, ref := range map[string]string{"auth.token": a.Token, "auth.roleId": a.RoleID, "auth.secretId": a.SecretID} {
		if ref == "" {
			continue
		}
		if _, err := authref.Parse(ref); err != nil {
			return bad("%s: %v (the secret itself belongs in the store the AuthRef names)", field, err)
		}
	}
	if t := c.conf.TimeoutSeconds; t != 0 {
		if t < 1 || t > 300 {
			return bad("timeoutSeconds must be between 1 and 300")
		}
		c.timeout = time.Duration(t) * time.Second
	}
	if h := c.conf.HealthIntervalSeconds; h != 0 && (h < 30 || h > 86400) {
		return bad("healthIntervalSeconds must be between 30 and 86400")
	}
	if p := c.conf.ProbeSecret; p != "" && (!vaultapi.CleanPath(p) || !strings.Contains(p, "/")) {
		return bad("probeSecret must be <mount>/<path> of [A-Za-z0-9._-] segments")
	}
	if u, err := url.Parse(c.conf.Address); err == nil && u.Scheme == "http" && c.conf.CACert != "" {
		return bad("caCert is set but the address is plain http")
	}
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	ac := vaultapi.Config{
		Address:    c.conf.Address,
		Namespace:  c.conf.Namespace,
		HTTPClient: hc,
		Timeout:    c.timeout,
		Now:        c.cfg.Now,
		Logger:     c.log,
	}
	if a.appRole() {
		ac.AppRole = &vaultapi.AppRole{Mount: a.Mount, Credentials: c.appRoleCredentials}
	} else {
		ac.Token = func(ctx context.Context) (string, error) {
			b, err := c.resolve(ctx, "auth.token", a.Token)
			return string(b), err
		}
	}
	api, err := vaultapi.New(ac)
	if err != nil {
		return fault.Permanentf("vault.hashicorp: %w", err)
	}
	c.hc, c.api = hc, api
	return nil
}

// httpClient is the caller's client, with a transport of our own that
// trusts the configured CA when there is one.
func (c *Connector) httpClient() (*http.Client, error) {
	base := c.cfg.HTTPClient
	if base == nil {
		base = http.DefaultClient
	}
	if c.conf.CACert == "" {
		return base, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.conf.CACert)) {
		return nil, fault.Permanentf("vault.hashicorp: config: caCert holds no PEM certificate")
	}
	var tr *http.Transport
	switch t := base.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		// The clone keeps the caller's dialer (the egress policy's
		// dial-time control) and proxy setting.
		tr = t.Clone()
	default:
		return nil, fault.Permanentf("vault.hashicorp: config: caCert needs the worker's standard HTTP transport")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if tr.TLSClientConfig != nil {
		tc = tr.TLSClientConfig.Clone()
	}
	tc.RootCAs = pool
	tr.TLSClientConfig = tc
	c.ownTr = tr
	hc := *base
	hc.Transport = tr
	return &hc, nil
}

// resolve reads a secret field's AuthRef now; the value lives for one
// request.
func (c *Connector) resolve(ctx context.Context, field, ref string) ([]byte, error) {
	if c.cfg.Secrets == nil {
		return nil, fault.Permanentf("vault.hashicorp: cannot resolve %s: no secret resolver configured", field)
	}
	b, err := c.cfg.Secrets.Resolve(ctx, ref)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Transient(err)
		}
		return nil, fmt.Errorf("vault.hashicorp: cannot resolve %s: %w", field, err)
	}
	return b, nil
}

func (c *Connector) appRoleCredentials(ctx context.Context) (string, string, error) {
	role, err := c.resolve(ctx, "auth.roleId", c.conf.Auth.RoleID)
	if err != nil {
		return "", "", err
	}
	if c.conf.Auth.SecretID == "" {
		return string(role), "", nil
	}
	secret, err := c.resolve(ctx, "auth.secretId", c.conf.Auth.SecretID)
	if err != nil {
		return "", "", err
	}
	return string(role), string(secret), nil
}

func (c *Connector) Type() string     { return Type }
func (c *Connector) Provider() string { return Provider }

// Validate checks the config without network calls.
func (c *Connector) Validate() error { return c.invalid }

// Close releases the connections of a transport built for the CA. It is
// safe to call twice and after a failed setup.
func (c *Connector) Close() error {
	if c.ownTr != nil {
		c.ownTr.CloseIdleConnections()
	}
	return nil
}

// KVMount is a KV secrets engine.
type KVMount struct {
	Path        string `json:"path"` // "secret", without the trailing slash
	Version     int    `json:"version"`
	Description string `json:"description,omitempty"`
}

// ListKVMounts lists the KV mounts (GET /v1/sys/mounts, filtered to type
// kv; the version from the mount's options), sorted by path. Vault does
// not page the mount table: the page is cut here, and the cursor is the
// last path of the previous page.
func (c *Connector) ListKVMounts(ctx context.Context, o connectors.ListOptions) (connectors.Page[KVMount], error) {
	var page connectors.Page[KVMount]
	if c.invalid != nil {
		return page, c.invalid
	}
	if o.Limit < 0 {
		return page, fault.Permanentf("vault.hashicorp: a negative page size (%d)", o.Limit)
	}
	all, err := c.kvMounts(ctx)
	if err != nil {
		return page, err
	}
	for _, m := range all {
		if o.Cursor != "" && m.Path <= o.Cursor {
			continue
		}
		if o.Limit > 0 && len(page.Items) == o.Limit {
			page.Next = page.Items[len(page.Items)-1].Path
			break
		}
		page.Items = append(page.Items, m)
	}
	return page, nil
}

func (c *Connector) kvMounts(ctx context.Context) ([]KVMount, error) {
	ms, err := c.api.Mounts(ctx)
	if err != nil {
		if vaultapi.CodeOf(err) == http.StatusForbidden {
			return nil, c.wrap("list the mounts", fault.Permanentf("%w (the token's policy needs read on sys/mounts)", err))
		}
		return nil, c.wrap("list the mounts", err)
	}
	var out []KVMount
	for _, m := range ms {
		if m.Type == "kv" || m.Type == "generic" {
			out = append(out, KVMount{Path: m.Path, Version: m.Version, Description: m.Description})
		}
	}
	return out, nil
}

// wrap names the operation and the Vault; the class stays.
func (c *Connector) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("vault.hashicorp: %s at %s: %w", op, c.api.Address(), err)
}
