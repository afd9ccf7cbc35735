package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"inthub.dev/pkg/fault"
)

// maxBody bounds what is read of any response: manifests and tag pages
// are small, and a registry that streams more is broken or hostile.
const maxBody = 4 << 20

// session is the auth state of one operation. Tokens and the basic header
// are cached for the operation only (the HEAD after a tag list reuses the
// token), so a credential never outlives the call that needed it.
type session struct {
	c  *Connector
	ac *auth.Client
}

func (c *Connector) session() *session {
	return &session{c: c, ac: &auth.Client{
		Client:     c.httpClient(),
		Header:     http.Header{"User-Agent": {"inthub-connector"}},
		Credential: c.credential,
		Cache:      auth.NewCache(),
		// nil keeps oras-go's realm denylist (loopback, link-local,
		// unspecified, metadata) for realms on another host than the
		// registry; private ranges stay allowed, as on-prem token
		// services live there and the egress policy of HTTPClient decides
		// at dial time.
		BlockedRealmPrefixes: nil,
	}}
}

// credential resolves the password at call time, for the registry's own
// host only: a token realm elsewhere gets the user's password only if it
// is this host.
func (c *Connector) credential(ctx context.Context, hostport string) (auth.Credential, error) {
	if c.base == nil || !strings.EqualFold(hostport, c.base.Host) {
		return auth.EmptyCredential, nil
	}
	if c.creds != nil {
		user, pass, err := c.creds(ctx)
		if err != nil {
			return auth.EmptyCredential, &credentialError{what: "cannot get the registry credentials", err: err}
		}
		if user == "" || pass == "" {
			return auth.EmptyCredential, &credentialError{what: "cannot get the registry credentials",
				err: fault.Permanent(errors.New("the provider returned an empty username or password"))}
		}
		return auth.Credential{Username: user, Password: pass}, nil
	}
	if c.conf.Username == "" {
		return auth.EmptyCredential, nil
	}
	if c.cfg.Secrets == nil {
		return auth.EmptyCredential, &credentialError{err: fault.Permanent(errors.New("no secret resolver configured"))}
	}
	secret, err := c.cfg.Secrets.Resolve(ctx, c.conf.Password)
	if err != nil {
		return auth.EmptyCredential, &credentialError{err: err}
	}
	return auth.Credential{Username: c.conf.Username, Password: string(secret)}, nil
}

// credentialsRefused tells a provider that its credentials were refused.
func (c *Connector) credentialsRefused() {
	if c.creds != nil && c.refused != nil {
		c.refused()
	}
}

// credentialError marks a failure to get the credentials (the password
// AuthRef, or a provider's Credentials), so it keeps its class instead of
// being taken for a network error.
type credentialError struct {
	what string // "" is the password AuthRef
	err  error
}

func (e *credentialError) Error() string {
	if e.what != "" {
		return e.what + ": " + e.err.Error()
	}
	return "cannot resolve the password AuthRef: " + e.err.Error()
}
func (e *credentialError) Unwrap() error { return e.err }

// withScope hints the token flow with pull access to repo, so one token
// serves every request of the operation.
func (s *session) withScope(ctx context.Context, repo string) context.Context {
	return auth.AppendRepositoryScope(ctx, registry.Reference{Registry: s.c.base.Host, Repository: repo}, auth.ActionPull)
}

type request struct {
	method string
	path   string // starts with /v2/
	query  url.Values
	accept []string
}

// do sends one request under the integration's per-request timeout, fails
// with a classified error on any non-2xx answer, and lets read consume the
// body (bounded by maxBody) before the timeout is released.
func (s *session) do(ctx context.Context, r request, read func(*http.Response, io.Reader) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.c.timeout)
	defer cancel()
	u := *s.c.base
	u.Path = r.path
	if len(r.query) > 0 {
		u.RawQuery = r.query.Encode()
	}
	op := r.method + " " + r.path
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), nil)
	if err != nil {
		return fault.Permanent(fmt.Errorf("%s: %w", op, err))
	}
	if len(r.accept) > 0 {
		req.Header.Set("Accept", strings.Join(r.accept, ", "))
	}
	resp, err := s.ac.Do(req)
	if err != nil {
		var tokenResp *errcode.ErrorResponse
		if errors.As(err, &tokenResp) && tokenResp.StatusCode == http.StatusUnauthorized {
			s.c.credentialsRefused()
		}
		return ClassifyTransport(ctx, op, s.c.timeout, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if resp.StatusCode == http.StatusUnauthorized {
			s.c.credentialsRefused()
		}
		return ClassifyStatus(op, resp)
	}
	if read == nil {
		return nil
	}
	if err := read(resp, io.LimitReader(resp.Body, maxBody+1)); err != nil {
		if ctx.Err() != nil {
			return ClassifyTransport(ctx, op, s.c.timeout, err)
		}
		var f *fault.Error
		if errors.As(err, &f) {
			return fmt.Errorf("%s: %w", op, err)
		}
		// A body that breaks off or does not parse: the registry may
		// answer properly next time.
		return fault.Transient(fmt.Errorf("%s: %w", op, err))
	}
	return nil
}

// readAll reads a whole bounded body.
func readAll(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if len(b) > maxBody {
		return nil, fault.Permanent(fmt.Errorf("response larger than %d bytes", maxBody))
	}
	return b, nil
}

// withCatalogScope hints the token flow with catalog access.
func withCatalogScope(ctx context.Context, host string) context.Context {
	return auth.AppendScopesForHost(ctx, host, auth.ScopeRegistryCatalog)
}
