package authref

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"inthub.dev/pkg/fault"
)

// Vault (or OpenBao) is reached with plain net/http rather than
// github.com/hashicorp/vault/api: only two endpoints are needed (KV v2 read
// and AppRole login), and that client brings some twenty modules, retries
// on its own (go-retryablehttp; drivers here classify and never retry) and
// takes VAULT_* environment variables as configuration when built with
// DefaultConfig, which is not how a multi-tenant worker should be set up.

const (
	defaultVaultTimeout = 10 * time.Second
	defaultAppRoleMount = "approle"
	// maxVaultBody bounds a Vault response: a KV secret of MaxFileSize
	// plus its JSON encoding and metadata.
	maxVaultBody = 4 * MaxFileSize
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
	// HTTPClient is used as given when set. The default refuses redirects
	// to another host: the token header would follow them.
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
	base      string // without a trailing slash
	cfg       VaultConfig
	hc        *http.Client
	timeout   time.Duration
	now       func() time.Time
	log       *slog.Logger
	loginLock chan struct{} // one AppRole login at a time; a channel so that waiting honours ctx

	mu        sync.Mutex
	token     string    // AppRole only
	refreshAt time.Time // zero: the token does not expire
}

func newVaultClient(cfg VaultConfig, now func() time.Time, log *slog.Logger) (*vaultClient, error) {
	bad := func(format string, args ...any) (*vaultClient, error) {
		return nil, fault.Permanentf("authref: vault configuration: "+format, args...)
	}
	u, err := url.Parse(cfg.Address)
	switch {
	case cfg.Address == "":
		return bad("no address")
	case err != nil:
		return bad("the address is not a URL")
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return bad("the address must be an http(s) URL with a host")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return bad("the address must not have userinfo, a query or a fragment")
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
	if a := cfg.AppRole; a != nil {
		if a.RoleID == "" {
			return bad("AppRole needs a RoleID")
		}
		if a.SecretID != "" && a.SecretIDFile != "" {
			return bad("set SecretID or SecretIDFile, not both")
		}
		if checkSegments(a.mountOrDefault(), vaultSegment) != "" {
			return bad("the AppRole mount must be a path of [A-Za-z0-9._-] segments")
		}
	}
	if cfg.Namespace != "" && checkSegments(strings.Trim(cfg.Namespace, "/"), vaultSegment) != "" {
		return bad("the namespace must be a path of [A-Za-z0-9._-] segments")
	}
	c := &vaultClient{
		base:      strings.TrimSuffix(u.String(), "/"),
		cfg:       cfg,
		hc:        cfg.HTTPClient,
		timeout:   cfg.Timeout,
		now:       now,
		log:       log,
		loginLock: make(chan struct{}, 1),
	}
	if c.timeout <= 0 {
		c.timeout = defaultVaultTimeout
	}
	if c.hc == nil {
		c.hc = &http.Client{
			Transport: http.DefaultTransport.(*http.Transport).Clone(),
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 3 {
					return errRedirect
				}
				if req.URL.Scheme != via[0].URL.Scheme || req.URL.Host != via[0].URL.Host {
					return errRedirect
				}
				return nil
			},
		}
	}
	return c, nil
}

var errRedirect = errors.New("refusing a redirect to another host or more than 3 redirects (the token would follow it): point Address at the active node")

// transportError classifies a failed request: a refused redirect is a
// configuration problem, anything else a Vault that cannot be reached now.
func (c *vaultClient) transportError(subject string, err error) error {
	err = unwrapURLError(err)
	if errors.Is(err, errRedirect) {
		return fault.Permanent(fmt.Errorf("%s: %w", subject, err))
	}
	return fault.Transient(fmt.Errorf("%s: vault at %s is unreachable: %w", subject, c.base, err))
}

// apiPath maps a reference's path to the KV v2 data endpoint. The first
// segment is the mount. The path may be written the way the Vault CLI
// takes it (secret/inthub/github) or the way the HTTP API spells it
// (secret/data/inthub/github): a "data" segment right after the mount is
// read as the latter, so a secret whose own path starts with "data/" is
// written secret/data/data/....
func apiPath(ref Ref) (string, error) {
	mount, rest, ok := strings.Cut(ref.Path, "/")
	if !ok {
		return "", fault.Permanentf("authref: %s: a vault reference needs <mount>/<path>, e.g. secret/inthub/github#token", ref)
	}
	if after, ok := strings.CutPrefix(rest, "data/"); ok {
		rest = after
	}
	return "/v1/" + mount + "/data/" + rest, nil
}

func (c *vaultClient) read(ctx context.Context, ref Ref) ([]byte, error) {
	p, err := apiPath(ref)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		tok, err := c.currentToken(ctx)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+p, nil)
		if err != nil {
			return nil, fault.Permanentf("authref: %s: %w", ref, err)
		}
		c.setHeaders(req, tok)
		resp, err := c.hc.Do(req)
		if err != nil {
			return nil, c.transportError("authref: "+ref.String(), err)
		}
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, maxVaultBody+1))
		resp.Body.Close()
		// An AppRole token that Vault no longer accepts (revoked, or its
		// lease ended sooner than announced) is replaced once.
		if resp.StatusCode == http.StatusForbidden && c.cfg.AppRole != nil && attempt == 0 {
			c.dropTokenIf(tok)
			clear(body)
			continue
		}
		if rerr != nil {
			clear(body)
			return nil, fault.Transient(fmt.Errorf("authref: %s: reading vault's answer: %w", ref, rerr))
		}
		if resp.StatusCode != http.StatusOK {
			clear(body)
			return nil, c.statusError("authref: "+ref.String(), "reading "+p, resp)
		}
		v, err := kvField(ref, body)
		clear(body)
		return v, err
	}
}

// kvField picks the reference's field out of a KV v2 read response. No
// error quotes the response: it holds the secret.
func kvField(ref Ref, body []byte) ([]byte, error) {
	if len(body) > maxVaultBody {
		return nil, fault.Permanentf("authref: %s: vault's answer is larger than %d bytes", ref, maxVaultBody)
	}
	var doc struct {
		Data *struct {
			Data map[string]json.RawMessage `json:"data"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Data == nil {
		return nil, fault.Permanentf("authref: %s: vault's answer is not a KV v2 secret (is the mount a KV version 2 engine?)", ref)
	}
	defer func() {
		for _, v := range doc.Data.Data {
			clear(v)
		}
	}()
	if doc.Data.Data == nil {
		// KV v2 answers a deleted version with data: null.
		return nil, fault.Permanentf("authref: %s: the secret's current version is deleted or destroyed", ref)
	}
	raw, ok := doc.Data.Data[ref.Field]
	if !ok || string(raw) == "null" {
		return nil, fault.Permanentf("authref: %s: the secret has no field %q", ref, ref.Field)
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fault.Permanentf("authref: %s: field %q is not a valid JSON string", ref, ref.Field)
		}
		if s == "" {
			return nil, fault.Permanentf("authref: %s: field %q is empty", ref, ref.Field)
		}
		return []byte(s), nil
	}
	// A number, boolean or object is handed over as its JSON text.
	return bytes.Clone(raw), nil
}

func (c *vaultClient) setHeaders(req *http.Request, token string) {
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	if c.cfg.Namespace != "" {
		req.Header.Set("X-Vault-Namespace", c.cfg.Namespace)
	}
	req.Header.Set("X-Vault-Request", "true")
}

// statusError classifies a non-200 answer. Vault's error messages are
// left out: the status says enough, and a proxy in front of Vault may
// echo the request, token included.
func (c *vaultClient) statusError(subject, what string, resp *http.Response) error {
	code := resp.StatusCode
	base := fmt.Sprintf("%s: vault answered %d %s", subject, code, what)
	switch {
	case code == http.StatusNotFound:
		return fault.Permanentf("%s: no such secret (check the mount, the path, and that the mount is KV version 2)", base)
	case code == http.StatusForbidden || code == http.StatusUnauthorized:
		return fault.Permanentf("%s: permission denied (the token or AppRole has no read policy on this path, or has expired)", base)
	case code == http.StatusTooManyRequests:
		err := fmt.Errorf("%s: rate limited", base)
		if d := retryAfter(resp.Header.Get("Retry-After")); d > 0 {
			return fault.RetryAfter(err, d)
		}
		return fault.Transient(err)
	case code == http.StatusServiceUnavailable:
		return fault.Transient(fmt.Errorf("%s: vault is sealed, in standby or down for maintenance", base))
	case code >= 500, code == http.StatusPreconditionFailed, code == http.StatusRequestTimeout:
		return fault.Transient(fmt.Errorf("%s", base))
	case code >= 300 && code < 400:
		return fault.Permanentf("%s: redirect not followed (point Address at the active node)", base)
	}
	return fault.Permanentf("%s", base)
}

func retryAfter(h string) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 0
}

// unwrapURLError drops the *url.Error wrapper, whose text repeats the
// method and URL that the message already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// currentToken returns the token for the next request, logging in with
// AppRole when there is none or it is due for renewal.
func (c *vaultClient) currentToken(ctx context.Context) (string, error) {
	switch {
	case c.cfg.Token != "":
		return c.cfg.Token, nil
	case c.cfg.TokenFile != "":
		b, err := readCredFile(c.cfg.TokenFile, "token file")
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	if tok, ok := c.validToken(); ok {
		return tok, nil
	}
	select {
	case c.loginLock <- struct{}{}:
	case <-ctx.Done():
		return "", fault.Transient(fmt.Errorf("authref: waiting for the vault login: %w", ctx.Err()))
	}
	defer func() { <-c.loginLock }()
	// Another caller may have logged in while this one waited.
	if tok, ok := c.validToken(); ok {
		return tok, nil
	}
	return c.login(ctx)
}

func (c *vaultClient) validToken() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" || (!c.refreshAt.IsZero() && !c.now().Before(c.refreshAt)) {
		return "", false
	}
	return c.token, true
}

func (c *vaultClient) dropTokenIf(tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == tok {
		c.token, c.refreshAt = "", time.Time{}
	}
}

func (c *vaultClient) dropToken() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token, c.refreshAt = "", time.Time{}
}

func (c *vaultClient) login(ctx context.Context) (string, error) {
	a := c.cfg.AppRole
	secretID := a.SecretID
	if a.SecretIDFile != "" {
		b, err := readCredFile(a.SecretIDFile, "AppRole secret-id file")
		if err != nil {
			return "", err
		}
		secretID = string(b)
	}
	creds := map[string]string{"role_id": a.RoleID}
	if secretID != "" {
		creds["secret_id"] = secretID
	}
	body, _ := json.Marshal(creds)
	what := "logging in at auth/" + a.mountOrDefault()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/auth/"+a.mountOrDefault()+"/login", bytes.NewReader(body))
	if err != nil {
		return "", fault.Permanentf("authref: vault login: %w", err)
	}
	c.setHeaders(req, "")
	req.Header.Set("Content-Type", "application/json")
	start := c.now()
	resp, err := c.hc.Do(req)
	clear(body)
	if err != nil {
		return "", c.transportError("authref: "+what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		switch resp.StatusCode {
		case http.StatusBadRequest, http.StatusForbidden, http.StatusUnauthorized:
			// Vault answers a wrong role id or secret id with 400 (older
			// versions) or 403.
			return "", fault.Permanentf("authref: vault answered %d %s: the role id or secret id is wrong, or the secret id expired or ran out of uses", resp.StatusCode, what)
		}
		return "", c.statusError("authref", what, resp)
	}
	var doc struct {
		Auth *struct {
			ClientToken   string `json:"client_token"`
			LeaseDuration int64  `json:"lease_duration"`
		} `json:"auth"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxVaultBody)).Decode(&doc); err != nil || doc.Auth == nil || doc.Auth.ClientToken == "" {
		return "", fault.Permanentf("authref: %s: vault's answer has no client token", what)
	}
	lease := time.Duration(doc.Auth.LeaseDuration) * time.Second
	c.mu.Lock()
	c.token, c.refreshAt = doc.Auth.ClientToken, time.Time{}
	if lease > 0 {
		// Log in again after four fifths of the lease, measured from
		// before the request, so a token is never used at its very end.
		c.refreshAt = start.Add(lease * 4 / 5)
	}
	c.mu.Unlock()
	c.log.LogAttrs(ctx, slog.LevelDebug, "vault approle login", slog.String("mount", a.mountOrDefault()),
		slog.Duration("lease", lease))
	return doc.Auth.ClientToken, nil
}

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
