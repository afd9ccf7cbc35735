package acr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// RefreshTokenUser is the username ACR expects beside a refresh token in
// the distribution token flow (what `az acr login --expose-token` prints).
const RefreshTokenUser = "00000000-0000-0000-0000-000000000000"

// Token lifetimes are judged with margins: a token that expires while a
// request is in flight, or on a server whose clock runs ahead, is refused.
const (
	aadMargin     = 2 * time.Minute
	refreshMargin = time.Minute
	// refreshFallback is the lifetime of a refresh token whose exp cannot
	// be read (ACR's last three hours; assuming less only costs an
	// exchange).
	refreshFallback = time.Hour
)

// tokens is the service-principal credential chain: an AAD access token
// from the client-credentials grant, exchanged at the registry for an ACR
// refresh token, which is the password of the distribution token flow.
// Both are cached until shortly before they expire; one fetch runs at a
// time (callers wait for it, or for their context).
type tokens struct {
	client    func() *http.Client
	secrets   connectors.SecretResolver
	now       func() time.Time
	timeout   time.Duration
	authority *url.URL // https://login.microsoftonline.com
	registry  *url.URL // https://myregistry.azurecr.io
	tenant    string
	clientID  string
	secretRef string
	scope     string

	sem     chan struct{}
	aad     cached
	refresh cached
}

type cached struct {
	value string
	exp   time.Time
}

func (c cached) valid(now time.Time, margin time.Duration) bool {
	return c.value != "" && now.Add(margin).Before(c.exp)
}

func (t *tokens) lock(ctx context.Context) error {
	select {
	case t.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fault.Transient(fmt.Errorf("waiting for the ACR token exchange: %w", ctx.Err()))
	}
}

func (t *tokens) unlock() { <-t.sem }

// credentials is the oci.Credentials hook: called once per token exchange
// of the distribution flow.
func (t *tokens) credentials(ctx context.Context) (string, string, error) {
	rt, err := t.refreshToken(ctx)
	if err != nil {
		return "", "", err
	}
	return RefreshTokenUser, rt.value, nil
}

// refused drops the refresh token after the registry refused it (revoked,
// or expired before its exp said), so the next call exchanges anew. The
// AAD token stays: the registry did not judge it.
func (t *tokens) refused() {
	t.sem <- struct{}{}
	t.refresh = cached{}
	t.unlock()
}

// refreshToken returns a valid ACR refresh token, exchanging a (cached or
// new) AAD token when the cached one is missing or about to expire.
func (t *tokens) refreshToken(ctx context.Context) (cached, error) {
	if err := t.lock(ctx); err != nil {
		return cached{}, err
	}
	defer t.unlock()
	now := t.now()
	if t.refresh.valid(now, refreshMargin) {
		return t.refresh, nil
	}
	if !t.aad.valid(now, aadMargin) {
		aad, err := t.aadToken(ctx)
		if err != nil {
			return cached{}, err
		}
		t.aad = aad
	}
	rt, err := t.exchange(ctx, t.aad.value)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassPermanent {
			// The AAD token may be what the registry refused (revoked,
			// wrong tenant): get a new one next time.
			t.aad = cached{}
		}
		return cached{}, err
	}
	t.refresh = rt
	return rt, nil
}

// aadError is the error document of the Microsoft identity platform.
type aadError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	Codes       []int  `json:"error_codes"`
}

// aadHints say how to fix the AADSTS errors that a misconfigured
// integration meets.
var aadHints = map[int]string{
	7000215: "clientSecret must hold the secret's value, not its ID, and belong to this clientId",
	7000222: "the client secret has expired: create a new one and update the AuthRef",
	700016:  "clientId is not an application in this tenant (check clientId and tenantId)",
	90002:   "tenantId does not name a tenant (check it, or the authorityHost of a sovereign cloud)",
	900023:  "tenantId is not a valid tenant id or domain",
	70011:   "scope is not valid for this application",
	500011:  "the resource of scope is not in this tenant",
}

// aadToken runs the client-credentials grant:
// POST {authority}/{tenant}/oauth2/v2.0/token.
func (t *tokens) aadToken(ctx context.Context) (cached, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	op := "AAD client-credentials token"
	secret, err := t.clientSecret(ctx)
	if err != nil {
		return cached{}, fmt.Errorf("%s: %w", op, err)
	}
	u := *t.authority
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + url.PathEscape(t.tenant) + "/oauth2/v2.0/token"
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {t.clientID},
		"client_secret": {string(secret)},
		"scope":         {t.scope},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return cached{}, fault.Permanent(fmt.Errorf("%s: %w", op, err))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := t.client().Do(req)
	if err != nil {
		return cached{}, oci.ClassifyTransport(ctx, op, t.timeout, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return cached{}, oci.ClassifyTransport(ctx, op, t.timeout, err)
	}
	if resp.StatusCode != http.StatusOK {
		return cached{}, aadFailure(op, resp, body)
	}
	var tok struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return cached{}, fault.Transient(fmt.Errorf("%s: malformed answer from %s", op, u.Host))
	}
	secs := 3600
	// expires_in is a number in v2.0 and a string in some v1 answers.
	if n, err := jsonInt(tok.ExpiresIn); err == nil && n > 0 {
		secs = n
	}
	return cached{value: tok.AccessToken, exp: t.now().Add(time.Duration(secs) * time.Second)}, nil
}

func jsonInt(raw json.RawMessage) (int, error) {
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return n, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, err
	}
	var m int
	_, err := fmt.Sscanf(s, "%d", &m)
	return m, err
}

// aadFailure classifies a refused grant (400/401 permanent, 429/5xx
// transient) and keeps AAD's error code and the first line of its
// description, which say what is wrong; the trace ids after it do not.
func aadFailure(op string, resp *http.Response, body []byte) error {
	err := connectors.ClassifyHTTP(resp, nil)
	if err == nil {
		err = fault.Permanent(&connectors.RequestError{Host: resp.Request.URL.Host, StatusCode: resp.StatusCode,
			Reason: fmt.Sprintf("%d %s: unexpected answer", resp.StatusCode, http.StatusText(resp.StatusCode))})
	}
	var doc aadError
	if json.Unmarshal(body, &doc) != nil || doc.Error == "" {
		return fmt.Errorf("%s: %w", op, err)
	}
	desc, _, _ := strings.Cut(strings.ReplaceAll(doc.Description, "\r\n", "\n"), "\n")
	if len(desc) > 300 {
		desc = desc[:300] + "…"
	}
	detail := doc.Error
	if desc != "" {
		detail += ": " + desc
	}
	for _, code := range doc.Codes {
		if hint, ok := aadHints[code]; ok {
			detail += " (" + hint + ")"
			break
		}
	}
	return fmt.Errorf("%s: %w: %s", op, err, detail)
}

func (t *tokens) clientSecret(ctx context.Context) ([]byte, error) {
	if t.secrets == nil {
		return nil, fault.Permanent(errors.New("cannot resolve the clientSecret AuthRef: no secret resolver configured"))
	}
	b, err := t.secrets.Resolve(ctx, t.secretRef)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Permanent(err)
		}
		return nil, fmt.Errorf("cannot resolve the clientSecret AuthRef: %w", err)
	}
	return b, nil
}

// exchange trades an AAD access token for an ACR refresh token:
// POST https://<registry>/oauth2/exchange.
func (t *tokens) exchange(ctx context.Context, aad string) (cached, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	op := "POST /oauth2/exchange"
	u := *t.registry
	u.Path = "/oauth2/exchange"
	form := url.Values{
		"grant_type":   {"access_token"},
		"service":      {t.registry.Host},
		"tenant":       {t.tenant},
		"access_token": {aad},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return cached{}, fault.Permanent(fmt.Errorf("%s: %w", op, err))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := t.client().Do(req)
	if err != nil {
		return cached{}, oci.ClassifyTransport(ctx, op, t.timeout, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := oci.ClassifyStatus(op, resp)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			err = fmt.Errorf("%w (the registry refused the service principal's AAD token: check tenantId, scope, and that the principal has a role on the registry such as AcrPull)", err)
		}
		return cached{}, err
	}
	var doc struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&doc); err != nil || doc.RefreshToken == "" {
		if ctx.Err() != nil {
			return cached{}, oci.ClassifyTransport(ctx, op, t.timeout, ctx.Err())
		}
		return cached{}, fault.Transient(fmt.Errorf("%s: malformed answer from %s", op, u.Host))
	}
	return cached{value: doc.RefreshToken, exp: t.refreshExpiry(doc.RefreshToken)}, nil
}

// refreshExpiry reads exp from the refresh token, a JWT the registry
// signed. It is not verified: the registry verifies it, and we only need
// to know when to exchange again.
func (t *tokens) refreshExpiry(tok string) time.Time {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err == nil && claims.ExpiresAt != nil {
		return claims.ExpiresAt.Time
	}
	return t.now().Add(refreshFallback)
}
