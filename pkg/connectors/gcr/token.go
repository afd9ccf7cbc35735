package gcr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
)

// token is an access token with its expiry on the connector's clock.
type token struct {
	access  string
	expires time.Time
	refresh time.Time
	email   string // the service account, for messages
}

// refreshMargin is how long before expiry a token is replaced: a quarter
// of its lifetime, at most 5 minutes (access tokens live an hour).
func refreshMargin(lifetime time.Duration) time.Duration {
	return min(5*time.Minute, lifetime/4)
}

// credentials is the oci.Credentials hook.
func (c *Connector) credentials(ctx context.Context) (string, string, error) {
	t, err := c.token(ctx, false)
	if err != nil {
		return "", "", err
	}
	return User, t.access, nil
}

// dropToken forgets the cached token (the registry refused it).
func (c *Connector) dropToken() {
	c.mu.Lock()
	c.tok = token{}
	c.mu.Unlock()
}

// token returns the cached token while fresh, else exchanges the key for
// a new one; concurrent callers share one exchange. fresh forces one.
func (c *Connector) token(ctx context.Context, fresh bool) (token, error) {
	if !fresh {
		c.mu.Lock()
		t := c.tok
		c.mu.Unlock()
		if t.access != "" && c.now().Before(t.refresh) {
			return t, nil
		}
	}
	ch := c.sf.DoChan("token", func() (any, error) { return c.mint(ctx) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return token{}, r.Err
		}
		return r.Val.(token), nil
	case <-ctx.Done():
		return token{}, fault.Transient(fmt.Errorf("gcr: access token: %w", ctx.Err()))
	}
}

// keyFile is what is read of the key before handing it to oauth2/google.
type keyFile struct {
	Type        string `json:"type"`
	ClientEmail string `json:"client_email"`
	TokenURI    string `json:"token_uri"`
}

func (c *Connector) mint(ctx context.Context) (token, error) {
	const op = "gcr: access token"
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if c.cfg.Secrets == nil {
		return token{}, fault.Permanent(fmt.Errorf("%s: cannot resolve the serviceAccountKey AuthRef: no secret resolver configured", op))
	}
	key, err := c.cfg.Secrets.Resolve(ctx, c.conf.ServiceAccountKey)
	if err != nil {
		if fault.ClassOf(err) == fault.ClassUnknown {
			err = fault.Permanent(err)
		}
		return token{}, fmt.Errorf("%s: cannot resolve the serviceAccountKey AuthRef: %w", op, err)
	}
	var kf keyFile
	if err := json.Unmarshal(key, &kf); err != nil {
		// Never quote the key or the parser's view of it.
		return token{}, fault.Permanent(fmt.Errorf("%s: the serviceAccountKey is not a JSON key file", op))
	}
	if kf.Type != "service_account" || kf.ClientEmail == "" {
		return token{}, fault.Permanent(fmt.Errorf("%s: the serviceAccountKey is not a service-account key (type %q; create a JSON key of a service account)", op, kf.Type))
	}
	if err := c.checkTokenURI(kf.TokenURI); err != nil {
		return token{}, fault.Permanent(fmt.Errorf("%s: %w", op, err))
	}
	jc, err := google.JWTConfigFromJSON(key, Scope)
	if err != nil {
		return token{}, fault.Permanent(fmt.Errorf("%s: the serviceAccountKey does not load: %s", op, keyError(err)))
	}
	// oauth2's JWT source posts without our context and flattens
	// transport errors (%v): this transport adds the context (timeout,
	// cancellation) and keeps the error for classification.
	tr := &recorder{base: c.httpClient().Transport, ctx: ctx}
	hc := &http.Client{Transport: tr, CheckRedirect: c.httpClient().CheckRedirect}
	start := time.Now()
	ot, err := jc.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, hc)).Token()
	if err != nil {
		return token{}, c.classify(ctx, op, kf, tr.error(), err)
	}
	if ot.AccessToken == "" {
		return token{}, fault.Transient(fmt.Errorf("%s: the token endpoint answered no access_token", op))
	}
	lifetime := time.Hour
	if !ot.Expiry.IsZero() {
		// oauth2 dates the expiry on the wall clock; keep the lifetime and
		// date it on ours.
		lifetime = ot.Expiry.Sub(start)
	}
	if lifetime <= 0 {
		return token{}, fault.Transient(fmt.Errorf("%s: the token endpoint answered an expired token", op))
	}
	now := c.now()
	t := token{access: ot.AccessToken, expires: now.Add(lifetime), email: kf.ClientEmail}
	t.refresh = t.expires.Add(-refreshMargin(lifetime))
	c.mu.Lock()
	c.tok = t
	c.mu.Unlock()
	c.log.DebugContext(ctx, "gcr access token minted", "serviceAccount", kf.ClientEmail, "expiresAt", t.expires.UTC().Format(time.RFC3339))
	return t, nil
}

// checkTokenURI holds the key's token_uri to the registry's rules: https,
// or http when the integration allows it. Google's own is the default.
func (c *Connector) checkTokenURI(raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.User != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return errors.New("the key's token_uri is not an absolute http(s) URL")
	}
	if u.Scheme == "http" && !c.conf.Insecure {
		return errors.New("the key's token_uri is plain http: set insecure to true to allow it")
	}
	return nil
}

// keyError says why a key does not load without quoting any of it.
func keyError(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "private key"), strings.Contains(msg, "PEM"):
		return "its private_key is not a PEM RSA key"
	default:
		return "it is not a service-account JSON key"
	}
}

func (c *Connector) classify(ctx context.Context, op string, kf keyFile, transport, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return fmt.Errorf("%s: %w", op, tokenError(re, kf))
	}
	if transport != nil {
		if ctx.Err() != nil && errors.Is(transport, context.DeadlineExceeded) {
			return fault.Transient(fmt.Errorf("%s: no answer within %s (timeoutSeconds): %w", op, c.timeout, context.DeadlineExceeded))
		}
		return fmt.Errorf("%s: %w", op, connectors.ClassifyNet(transport))
	}
	if ctx.Err() != nil {
		return fault.Transient(fmt.Errorf("%s: no answer within %s (timeoutSeconds): %w", op, c.timeout, ctx.Err()))
	}
	// A key whose private key does not parse, or an answer that is not
	// JSON: oauth2 gives no type; the message is its own (no secret in
	// it: it names the failure, not the key).
	if strings.Contains(err.Error(), "private key") {
		return fault.Permanent(fmt.Errorf("%s: the serviceAccountKey's private_key is not a PEM RSA key", op))
	}
	return fault.Transient(fmt.Errorf("%s: %w", op, err))
}

// tokenError classifies an OAuth2 error answer: invalid_grant and
// invalid_client (a deleted or disabled key, a signature that does not
// verify) are permanent; 429 and 5xx transient.
func tokenError(re *oauth2.RetrieveError, kf keyFile) error {
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(re.Body, &body)
	classified := connectors.ClassifyHTTP(re.Response, nil)
	var rq *connectors.RequestError
	if !errors.As(classified, &rq) {
		return fault.Transient(fmt.Errorf("token endpoint answered %d", re.Response.StatusCode))
	}
	detail := strings.Join(strings.Fields(strings.TrimSpace(body.Error+": "+body.Description)), " ")
	detail = strings.Trim(detail, ": ")
	if len(detail) > 200 {
		detail = detail[:200] + "…"
	}
	if detail != "" {
		rq.Reason += " (" + detail + ")"
	}
	switch body.Error {
	case "invalid_grant", "invalid_client", "unauthorized_client":
		rq.Reason += ": Google refused the key of " + kf.ClientEmail + " (deleted, disabled, or not this account's); create a new JSON key"
		return fault.Permanent(rq)
	case "invalid_scope":
		rq.Reason += ": the scope " + Scope + " was refused"
		return fault.Permanent(rq)
	}
	return classified
}

// recorder passes requests to base under ctx and keeps the first
// transport error.
type recorder struct {
	base http.RoundTripper
	ctx  context.Context
	mu   sync.Mutex
	err  error
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	base := r.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req.WithContext(r.ctx))
	if err != nil {
		r.mu.Lock()
		if r.err == nil {
			r.err = err
		}
		r.mu.Unlock()
	}
	return resp, err
}

func (r *recorder) error() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}
