// Package vaultapi is the small HashiCorp Vault (and OpenBao) client that
// inthub shares between the resolution of authref://vault references
// (pkg/authref) and the vault.hashicorp connector: token or AppRole
// authentication, namespaces, KV version 1 and 2 reads, and the sys
// endpoints a health check reads (health, seal status, token lookup-self,
// mounts).
//
// It is plain net/http rather than github.com/hashicorp/vault/api: the
// two users need seven endpoints; that client brings some twenty modules
// into pkg, retries on its own (go-retryablehttp; drivers here classify
// and never retry), follows VAULT_* environment variables when built with
// DefaultConfig (not how a multi-tenant worker is configured) and keeps a
// token in the client, where here credentials are asked for at each call
// (an AuthRef resolved now, a token file read again).
//
// Errors are classified with package fault and never quote Vault's answer
// (a proxy in front of Vault may echo the request, token included), the
// token, a secret id or a secret's value.
package vaultapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"inthub.dev/pkg/fault"
)

const (
	// DefaultTimeout bounds one call (an AppRole login included).
	DefaultTimeout = 10 * time.Second
	// DefaultAppRoleMount is where the AppRole auth method is mounted.
	DefaultAppRoleMount = "approle"
	// MaxBody bounds a Vault answer: a KV secret of a few MiB plus its
	// JSON encoding and metadata.
	MaxBody = 4 << 20
	// maxRedirects bounds redirects (a standby forwarding to the active
	// node, within one host).
	maxRedirects = 3
)

var segment = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// CleanPath reports whether p is a relative slash path of
// [A-Za-z0-9._-] segments, with no empty, "." or ".." segment: the
// only paths this client puts into a URL.
func CleanPath(p string) bool {
	if p == "" {
		return false
	}
	for s := range strings.SplitSeq(p, "/") {
		if s == "" || s == "." || s == ".." || !segment.MatchString(s) {
			return false
		}
	}
	return true
}

// Config says how to reach one Vault. Exactly one of Token and AppRole
// authenticates; Health and SealStatus need neither.
type Config struct {
	// Address is Vault's base URL, e.g. https://vault.internal:8200.
	Address string
	// Namespace is sent as X-Vault-Namespace on authenticated calls
	// (Vault Enterprise, OpenBao).
	Namespace string
	// Token returns the token of the next request. It is asked at every
	// request, so a rotated token (a file, an AuthRef) is picked up.
	Token func(ctx context.Context) (string, error)
	// AppRole logs in with a role id and secret id, and logs in again
	// before the token's lease ends and after a 403.
	AppRole *AppRole
	// HTTPClient makes the requests (nil: a client of its own). A copy
	// is used whose redirects stay on the address's host: the token
	// header would follow them.
	HTTPClient *http.Client
	// Timeout bounds one call, a login included (DefaultTimeout).
	Timeout time.Duration
	Now     func() time.Time
	Logger  *slog.Logger
}

// AppRole is the AppRole auth method's configuration.
type AppRole struct {
	// Mount is where the method is mounted (DefaultAppRoleMount).
	Mount string
	// Credentials returns the role id and secret id, asked at each login;
	// the secret id may be empty for a role that binds none.
	Credentials func(ctx context.Context) (roleID, secretID string, err error)
}

// MountOrDefault is the AppRole mount in use.
func (a AppRole) MountOrDefault() string {
	if a.Mount == "" {
		return DefaultAppRoleMount
	}
	return a.Mount
}

// Client calls one Vault. It is safe for concurrent use.
type Client struct {
	base      string // without a trailing slash
	host      string
	cfg       Config
	hc        *http.Client
	own       bool // hc is ours: Close releases its connections
	timeout   time.Duration
	now       func() time.Time
	log       *slog.Logger
	loginLock chan struct{} // one AppRole login at a time; a channel so that waiting honours ctx

	mu        sync.Mutex
	token     string    // AppRole only
	refreshAt time.Time // zero: the token does not expire
	leaseEnd  time.Time
}

// New checks cfg and builds a client, without I/O. Its errors are
// permanent and name the field at fault.
func New(cfg Config) (*Client, error) {
	bad := func(format string, args ...any) (*Client, error) {
		return nil, fault.Permanentf("vault configuration: "+format, args...)
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
	if cfg.Token != nil && cfg.AppRole != nil {
		return bad("set a token or AppRole, not both")
	}
	if a := cfg.AppRole; a != nil {
		if a.Credentials == nil {
			return bad("AppRole needs its credentials")
		}
		if !CleanPath(a.MountOrDefault()) {
			return bad("the AppRole mount must be a path of [A-Za-z0-9._-] segments")
		}
	}
	if cfg.Namespace != "" && !CleanPath(strings.Trim(cfg.Namespace, "/")) {
		return bad("the namespace must be a path of [A-Za-z0-9._-] segments")
	}
	c := &Client{
		base:      strings.TrimSuffix(u.String(), "/"),
		host:      u.Host,
		cfg:       cfg,
		timeout:   cfg.Timeout,
		now:       cfg.Now,
		log:       cfg.Logger,
		loginLock: make(chan struct{}, 1),
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	var hc http.Client
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	} else {
		hc.Transport = http.DefaultTransport.(*http.Transport).Clone()
		c.own = true
	}
	prev := hc.CheckRedirect
	hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects || req.URL.Scheme != via[0].URL.Scheme || req.URL.Host != via[0].URL.Host {
			return errRedirect
		}
		if prev != nil {
			return prev(req, via)
		}
		return nil
	}
	c.hc = &hc
	return c, nil
}

// Address is the base URL, without a trailing slash.
func (c *Client) Address() string { return c.base }

// Close releases the idle connections of a client of its own.
func (c *Client) Close() {
	if c.own {
		c.hc.CloseIdleConnections()
	}
}

var errRedirect = errors.New("refusing a redirect to another host or more than 3 redirects (the token would follow it): point the address at the active node")

// DropToken makes the next AppRole-authenticated call log in again.
func (c *Client) DropToken() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token, c.refreshAt, c.leaseEnd = "", time.Time{}, time.Time{}
}

func (c *Client) dropTokenIf(tok string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == tok {
		c.token, c.refreshAt, c.leaseEnd = "", time.Time{}, time.Time{}
	}
}

// StatusError is a Vault answer outside 2xx. Its text says what the
// status means for the call, never what Vault wrote.
type StatusError struct {
	Code int
	What string // "reading /v1/secret/data/x"
	Hint string
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("vault answered %d %s", e.Code, e.What)
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

// CodeOf is the HTTP status of a failed call, 0 when it got none.
func CodeOf(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// statusError classifies a non-2xx answer.
func statusError(what string, resp *http.Response) error {
	code := resp.StatusCode
	se := &StatusError{Code: code, What: what}
	switch {
	case code == http.StatusNotFound:
		se.Hint = "no such path (check the mount, the path, and the mount's KV version)"
		return fault.Permanent(se)
	case code == http.StatusForbidden || code == http.StatusUnauthorized:
		se.Hint = "permission denied (the token or AppRole has no policy for this path, or has expired)"
		return fault.Permanent(se)
	case code == http.StatusTooManyRequests:
		se.Hint = "rate limited"
		if d := retryAfter(resp.Header.Get("Retry-After")); d > 0 {
			return fault.RetryAfter(se, d)
		}
		return fault.Transient(se)
	case code == http.StatusServiceUnavailable:
		se.Hint = "vault is sealed, in standby or down for maintenance"
		return fault.Transient(se)
	case code >= 500, code == http.StatusPreconditionFailed, code == http.StatusRequestTimeout:
		// 412: a performance standby has not caught up with a write yet.
		return fault.Transient(se)
	case code >= 300 && code < 400:
		se.Hint = "redirect not followed (point the address at the active node)"
		return fault.Permanent(se)
	}
	return fault.Permanent(se)
}

func retryAfter(h string) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	return 0
}

// transportError classifies a failed request: a refused redirect is a
// configuration problem, anything else a Vault that cannot be reached now.
func (c *Client) transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		// Its text repeats the method and URL.
		err = ue.Err
	}
	if errors.Is(err, errRedirect) {
		return fault.Permanent(err)
	}
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
	)
	if errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &hostname) {
		// Only a change of configuration (the CA, the address) fixes it.
		return fault.Permanent(fmt.Errorf("vault at %s: the server's certificate does not verify (configure its CA, or check the address's host name): %w", c.base, err))
	}
	return fault.Transient(fmt.Errorf("vault at %s is unreachable: %w", c.base, err))
}

// request performs one request and returns the status and the body
// (at most MaxBody). token "" sends none; namespace sends the namespace.
func (c *Client) request(ctx context.Context, method, p string, token string, namespace bool, body []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+p, rd)
	if err != nil {
		return nil, nil, fault.Permanent(err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	if namespace && c.cfg.Namespace != "" {
		req.Header.Set("X-Vault-Namespace", c.cfg.Namespace)
	}
	req.Header.Set("X-Vault-Request", "true")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, c.transportError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		clear(b)
		return resp, nil, fault.Transient(fmt.Errorf("reading vault's answer: %w", err))
	}
	if len(b) > MaxBody {
		clear(b)
		return resp, nil, fault.Permanentf("vault's answer is larger than %d bytes", MaxBody)
	}
	return resp, b, nil
}

// Get performs an authenticated GET of p ("/v1/...") and returns the
// answer's body, which the caller clears when it holds a secret. An AppRole
// token that Vault refuses with 403 is replaced once.
func (c *Client) Get(ctx context.Context, p string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	what := "reading " + p
	for attempt := 0; ; attempt++ {
		tok, err := c.currentToken(ctx)
		if err != nil {
			return nil, err
		}
		resp, body, err := c.request(ctx, http.MethodGet, p, tok, true, nil)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusForbidden && c.cfg.AppRole != nil && attempt == 0 {
			c.dropTokenIf(tok)
			clear(body)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			clear(body)
			return nil, statusError(what, resp)
		}
		return body, nil
	}
}

// currentToken returns the token for the next request, logging in with
// AppRole when there is none or it is due for renewal.
func (c *Client) currentToken(ctx context.Context) (string, error) {
	if c.cfg.AppRole == nil {
		if c.cfg.Token == nil {
			return "", fault.Permanentf("vault configuration: no token and no AppRole: this call needs one")
		}
		tok, err := c.cfg.Token(ctx)
		if err != nil {
			return "", err
		}
		tok = strings.TrimSpace(tok)
		if tok == "" {
			return "", fault.Permanentf("the vault token is empty")
		}
		return tok, nil
	}
	if tok, ok := c.validToken(); ok {
		return tok, nil
	}
	select {
	case c.loginLock <- struct{}{}:
	case <-ctx.Done():
		return "", fault.Transient(fmt.Errorf("waiting for the vault login: %w", ctx.Err()))
	}
	defer func() { <-c.loginLock }()
	// Another caller may have logged in while this one waited.
	if tok, ok := c.validToken(); ok {
		return tok, nil
	}
	return c.login(ctx)
}

func (c *Client) validToken() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" || (!c.refreshAt.IsZero() && !c.now().Before(c.refreshAt)) {
		return "", false
	}
	return c.token, true
}

// Login logs in with AppRole now, replacing the current token, and
// returns when the new token's lease ends (zero: no end). Without AppRole
// it does nothing.
func (c *Client) Login(ctx context.Context) (time.Time, error) {
	if c.cfg.AppRole == nil {
		return time.Time{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	select {
	case c.loginLock <- struct{}{}:
	case <-ctx.Done():
		return time.Time{}, fault.Transient(fmt.Errorf("waiting for the vault login: %w", ctx.Err()))
	}
	defer func() { <-c.loginLock }()
	if _, err := c.login(ctx); err != nil {
		return time.Time{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leaseEnd, nil
}

func (c *Client) login(ctx context.Context) (string, error) {
	a := c.cfg.AppRole
	what := "logging in at auth/" + a.MountOrDefault()
	roleID, secretID, err := a.Credentials(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if strings.TrimSpace(roleID) == "" {
		return "", fault.Permanentf("%s: the role id is empty", what)
	}
	creds := map[string]string{"role_id": strings.TrimSpace(roleID)}
	if s := strings.TrimSpace(secretID); s != "" {
		creds["secret_id"] = s
	}
	body, _ := json.Marshal(creds)
	start := c.now()
	resp, b, err := c.request(ctx, http.MethodPost, "/v1/auth/"+a.MountOrDefault()+"/login", "", true, body)
	clear(body)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	defer clear(b)
	if resp.StatusCode != http.StatusOK {
		switch resp.StatusCode {
		case http.StatusBadRequest, http.StatusForbidden, http.StatusUnauthorized:
			// Vault answers a wrong role id or secret id with 400 (older
			// versions) or 403.
			return "", fault.Permanent(&StatusError{Code: resp.StatusCode, What: what,
				Hint: "the role id or secret id is wrong, or the secret id expired or ran out of uses"})
		}
		return "", statusError(what, resp)
	}
	var doc struct {
		Auth *struct {
			ClientToken   string `json:"client_token"`
			LeaseDuration int64  `json:"lease_duration"`
		} `json:"auth"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || doc.Auth == nil || doc.Auth.ClientToken == "" {
		return "", fault.Permanentf("%s: vault's answer has no client token", what)
	}
	lease := time.Duration(doc.Auth.LeaseDuration) * time.Second
	c.mu.Lock()
	c.token, c.refreshAt, c.leaseEnd = doc.Auth.ClientToken, time.Time{}, time.Time{}
	if lease > 0 {
		// Log in again after four fifths of the lease, measured from
		// before the request, so a token is never used at its very end.
		c.refreshAt = start.Add(lease * 4 / 5)
		c.leaseEnd = start.Add(lease)
	}
	c.mu.Unlock()
	c.log.LogAttrs(ctx, slog.LevelDebug, "vault approle login", slog.String("mount", a.MountOrDefault()),
		slog.Duration("lease", lease))
	return doc.Auth.ClientToken, nil
}
