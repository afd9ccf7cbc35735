package github

import (
	"context"
	"crypto/rsa"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	jwt "github.com/golang-jwt/jwt/v4"

	"inthub.dev/pkg/fault"
)

// GitHub App authentication, in two steps: the app signs a short JWT with
// its private key (proves the app), then trades it for an installation
// token (proves the installation) that authenticates every other call.
// ghinstallation does both and refreshes the token a minute before it
// expires; this file feeds it the key only while a call needs it.

// refreshMargin is how long before the token's expiry a call resolves the
// private key. It is wider than ghinstallation's one-minute refresh
// window, so the key is held whenever ghinstallation decides to refresh.
const refreshMargin = 2 * time.Minute

// maxBody bounds every response body: GitHub's largest pages are far
// below it, and a hostile endpoint must not make a worker buffer without
// limit.
const maxBody = 8 << 20

// refusedError is a request this side refused to make or finish; its
// message is safe to show.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

var (
	errNoKey        error = &refusedError{"the app's private key is not loaded"}
	errBodyTooLarge error = &refusedError{fmt.Sprintf("the response body is larger than %d MiB", maxBody>>20)}
)

// keySigner signs app JWTs while at least one call holds the key. The key
// is resolved through its AuthRef when a call needs it and dropped when
// the last such call ends: the connector never keeps the secret between
// calls, and a rotated key takes effect at the next call.
type keySigner struct {
	mu    sync.Mutex
	key   *rsa.PrivateKey
	users int
}

var _ ghinstallation.Signer = (*keySigner)(nil)

func (s *keySigner) Sign(claims jwt.Claims) (string, error) {
	s.mu.Lock()
	key := s.key
	s.mu.Unlock()
	if key == nil {
		return "", errNoKey
	}
	return jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(key)
}

// holdKey resolves and parses the private key and keeps it in the signer
// until release is called.
func (c *Connector) holdKey(ctx context.Context) (release func(), err error) {
	ref := c.conf.keyRef(c.cfg.AuthRef)
	if c.cfg.Secrets == nil {
		return nil, fault.Permanent(&apiError{op: "load the app's private key",
			msg: "no secret resolver is configured, so " + ref + " cannot be resolved"})
	}
	pemBytes, err := c.cfg.Secrets.Resolve(ctx, ref)
	if err != nil {
		// The resolver classifies (a missing variable is permanent, a
		// Vault outage transient); an unclassified failure may pass.
		class := fault.ClassOf(err)
		if class == fault.ClassUnknown {
			class = fault.ClassTransient
		}
		return nil, classed(class, 0, &apiError{op: "load the app's private key", msg: ref + ": " + err.Error(), err: err})
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(pemBytes)
	if err != nil {
		// The parser's message is not quoted: it is generic at best and
		// must never carry key material.
		return nil, fault.Permanent(&apiError{op: "load the app's private key",
			msg: ref + " does not hold a PEM-encoded RSA private key (PKCS#1 or PKCS#8), as GitHub issues for an app"})
	}
	s := c.signer
	s.mu.Lock()
	s.key = key
	s.users++
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.users--
			if s.users == 0 {
				s.key = nil
			}
			s.mu.Unlock()
		})
	}, nil
}

// tokenSource hands out the installation token. ghinstallation caches it
// and refreshes it before expiry; the mutex serialises every use of the
// ghinstallation transport, whose Expiry reads the token without its own
// lock.
type tokenSource struct {
	c       *Connector
	mu      sync.Mutex
	inst    *ghinstallation.Transport
	expires time.Time
}

// newTokenSource builds a token source with no token yet: its first use
// exchanges the app JWT for an installation token.
func (c *Connector) newTokenSource() *tokenSource {
	// Each source has its own AppsTransport: ghinstallation writes the
	// apps transport's fields on every refresh.
	apps, err := ghinstallation.NewAppsTransportWithOptions(c.base, c.conf.AppID, ghinstallation.WithSigner(c.signer))
	if err != nil {
		// Only a nil signer fails, and the signer is never nil.
		panic(err)
	}
	apps.BaseURL = strings.TrimSuffix(c.ends.api, "/")
	return &tokenSource{c: c, inst: ghinstallation.NewFromAppsTransport(apps, c.conf.InstallationID)}
}

func (ts *tokenSource) token(ctx context.Context) (string, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.expires.IsZero() || !time.Now().Before(ts.expires.Add(-refreshMargin)) {
		release, err := ts.c.holdKey(ctx)
		if err != nil {
			return "", err
		}
		defer release()
	}
	tok, err := ts.inst.Token(ctx)
	if err != nil {
		return "", err
	}
	if exp, _, err := ts.inst.Expiry(); err == nil {
		ts.expires = exp
	}
	return tok, nil
}

// expiry is when the current installation token expires (zero before the
// first exchange).
func (ts *tokenSource) expiry() time.Time {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.expires
}

// tokenTransport authenticates requests with the installation token.
type tokenTransport struct{ ts *tokenSource }

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.ts.token(req.Context())
	if err != nil {
		closeBody(req)
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "token "+tok)
	return t.ts.c.base.RoundTrip(r)
}

// appTransport authenticates requests with an app JWT (GET app).
type appTransport struct {
	c    *Connector
	apps *ghinstallation.AppsTransport
}

func (t *appTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	release, err := t.c.holdKey(req.Context())
	if err != nil {
		closeBody(req)
		return nil, err
	}
	defer release()
	// AppsTransport sets headers on the request it gets: give it a copy.
	return t.apps.RoundTrip(req.Clone(req.Context()))
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// limitTransport caps response bodies at maxBody.
type limitTransport struct{ next http.RoundTripper }

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, n: maxBody}
	return resp, nil
}

type limitedBody struct {
	rc io.ReadCloser
	n  int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		var one [1]byte
		k, err := b.rc.Read(one[:])
		if k > 0 {
			return 0, errBodyTooLarge
		}
		return 0, err
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	k, err := b.rc.Read(p)
	b.n -= int64(k)
	return k, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// maxRedirects bounds redirects (GitHub redirects renamed and transferred
// repositories).
const maxRedirects = 5

// checkRedirect follows redirects only within the API root's origin. The
// transports add the JWT or the installation token to every request,
// redirected ones included, so a redirect elsewhere would hand the token
// to whoever the endpoint points at.
func (c *Connector) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return &refusedError{fmt.Sprintf("more than %d redirects", maxRedirects)}
	}
	if req.URL.Scheme != c.apiURL.Scheme || !strings.EqualFold(req.URL.Host, c.apiURL.Host) {
		return &refusedError{fmt.Sprintf("the endpoint redirected to another origin (%s://%s); the credentials are not sent there", req.URL.Scheme, req.URL.Host)}
	}
	if c.userRedirect != nil {
		return c.userRedirect(req, via)
	}
	return nil
}
