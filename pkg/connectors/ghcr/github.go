package ghcr

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// The GitHub REST API is where GHCR's repositories are listed (the
// registry has no catalog): GET /users/{u}/packages or /orgs/{o}/packages
// with package_type=container. A classic PAT needs read:packages for it,
// as for pulls; GitHub names a token's scopes in X-OAuth-Scopes.

const (
	apiPageSize    = 30
	apiMaxPageSize = 100 // per_page maximum
	// ScopeReadPackages is the PAT scope that reading packages needs;
	// write:packages includes it.
	ScopeReadPackages = "read:packages"
)

// ScopeError is a token that lacks the scope GHCR needs. It is
// permanent: only a new token fixes it.
type ScopeError struct {
	// Has are the token's scopes, as GitHub reported them.
	Has []string
}

func (e *ScopeError) Error() string {
	has := "none"
	if len(e.Has) > 0 {
		has = strings.Join(e.Has, ", ")
	}
	return "the token lacks the read:packages scope (its scopes: " + has + "); create a classic personal access token with read:packages (GitHub → Settings → Developer settings → Personal access tokens) and update the token AuthRef"
}

// scopes reads X-OAuth-Scopes; ok is false when GitHub sent none (not a
// classic PAT: a fine-grained token, which GHCR does not accept).
func scopes(h http.Header) (list []string, ok bool) {
	v, present := h["X-Oauth-Scopes"]
	if !present {
		return nil, false
	}
	for _, s := range strings.Split(strings.Join(v, ","), ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, s)
		}
	}
	return list, true
}

func canReadPackages(list []string) bool {
	return slices.Contains(list, ScopeReadPackages) || slices.Contains(list, "write:packages")
}

// api GETs path under the API root with the PAT and decodes the JSON
// answer into v.
func (c *Connector) api(ctx context.Context, path string, query url.Values, v any) (http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	op := "GET " + path
	token, err := c.token(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	u := *c.apiBase
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fault.Permanent(fmt.Errorf("%s: %w", op, err))
	}
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	req.Header.Set("User-Agent", "inthub-connector")
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, oci.ClassifyTransport(ctx, op, c.timeout, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, oci.ClassifyTransport(ctx, op, c.timeout, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.Header, apiFailure(op, resp, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return resp.Header, fault.Transient(fmt.Errorf("%s: malformed JSON answer: %w", op, err))
	}
	return resp.Header, nil
}

// apiFailure classifies with the shared rules (GitHub's 403/429 rate
// limits transient with their reset) and turns a 403 for a missing
// packages scope into a ScopeError.
func apiFailure(op string, resp *http.Response, body []byte) error {
	err := connectors.ClassifyHTTP(resp, nil)
	if err == nil {
		err = fault.Permanent(&connectors.RequestError{Host: resp.Request.URL.Host, StatusCode: resp.StatusCode,
			Reason: fmt.Sprintf("%d %s: unexpected redirect", resp.StatusCode, http.StatusText(resp.StatusCode))})
	}
	if resp.StatusCode == http.StatusForbidden && fault.ClassOf(err) == fault.ClassPermanent {
		if has, ok := scopes(resp.Header); ok && !canReadPackages(has) {
			return fault.Permanent(fmt.Errorf("%s: %w", op, &ScopeError{Has: has}))
		}
	}
	var doc struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &doc)
	msg := strings.Join(strings.Fields(doc.Message), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg != "" {
		return fmt.Errorf("%s: %w: %s", op, err, msg)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// whoami reads the token's user and scopes (GET /user).
func (c *Connector) whoami(ctx context.Context) (login string, has []string, classic bool, rl *connectors.RateLimit, err error) {
	var doc struct {
		Login string `json:"login"`
	}
	h, err := c.api(ctx, "/user", nil, &doc)
	if h != nil {
		rl = connectors.ParseRateLimit(h)
	}
	if err != nil {
		return "", nil, false, rl, err
	}
	has, classic = scopes(h)
	return doc.Login, has, classic, rl, nil
}

type ghPackage struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	Visibility string `json:"visibility"`
	Owner      struct {
		Login string `json:"login"`
	} `json:"owner"`
}

// ListRepositories lists one page of the owner's container packages; the
// full name is the image path on ghcr.io, owner/package, lower case.
func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	var out connectors.Page[connectors.Repository]
	if err := c.Validate(); err != nil {
		return out, err
	}
	page, err := oci.PageOf(Type, o.Cursor)
	if err != nil {
		return out, err
	}
	size := apiPageSize
	if o.Limit > 0 {
		size = min(o.Limit, apiMaxPageSize)
	}
	prefix := "/users/"
	if c.conf.OwnerType == OwnerOrg {
		prefix = "/orgs/"
	}
	var pkgs []ghPackage
	q := url.Values{"package_type": {"container"}, "page": {strconv.Itoa(page)}, "per_page": {strconv.Itoa(size)}}
	h, err := c.api(ctx, prefix+url.PathEscape(c.conf.Owner)+"/packages", q, &pkgs)
	if err != nil {
		return out, err
	}
	out.Items = make([]connectors.Repository, 0, len(pkgs))
	for _, p := range pkgs {
		owner := p.Owner.Login
		if owner == "" {
			owner = c.conf.Owner
		}
		full := strings.ToLower(owner + "/" + p.Name)
		out.Items = append(out.Items, connectors.Repository{ID: strconv.FormatInt(p.ID, 10), FullName: full, Private: p.Visibility != "public"})
	}
	// The Link header only says whether there is more; the cursor is our
	// own page number, so no caller can steer a request through it.
	if hasNext(h) && len(pkgs) > 0 {
		out.Next = oci.NextPage(page + 1)
	}
	return out, nil
}

func hasNext(h http.Header) bool {
	for _, link := range h.Values("Link") {
		for _, part := range strings.Split(link, ",") {
			if _, params, ok := strings.Cut(part, ";"); ok && strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
				return true
			}
		}
	}
	return false
}
