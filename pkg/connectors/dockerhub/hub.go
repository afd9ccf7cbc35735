package dockerhub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/fault"
)

// The Hub API (hub.docker.com) is where repositories are listed; the
// registry has no catalog for Docker Hub. With credentials, a personal
// access token is exchanged for a short-lived bearer token at
// POST /v2/auth/token; anonymously, a namespace's public repositories
// are listed without one.

const (
	hubPageSize    = 25
	hubMaxPageSize = 100 // the Hub API's page_size maximum
	// hubTokenFallback is the lifetime of a Hub token whose exp cannot be
	// read.
	hubTokenFallback = 5 * time.Minute
	hubTokenMargin   = 30 * time.Second
)

// hubToken returns a Hub API bearer token, from cache while it is valid.
func (c *Connector) hubToken(ctx context.Context) (string, error) {
	select {
	case c.hubSem <- struct{}{}:
	case <-ctx.Done():
		return "", fault.Transient(fmt.Errorf("waiting for the Docker Hub token: %w", ctx.Err()))
	}
	defer func() { <-c.hubSem }()
	if c.hubTok != "" && c.now().Add(hubTokenMargin).Before(c.hubExp) {
		return c.hubTok, nil
	}
	secret, err := c.secret(ctx)
	if err != nil {
		return "", fmt.Errorf("POST /v2/auth/token: %w", err)
	}
	body, _ := json.Marshal(map[string]string{"identifier": c.conf.Username, "secret": string(secret)})
	var doc struct {
		AccessToken string `json:"access_token"`
	}
	if _, err := c.hub(ctx, http.MethodPost, "/v2/auth/token", nil, body, "", &doc); err != nil {
		return "", err
	}
	if doc.AccessToken == "" {
		return "", fault.Transient(errors.New("POST /v2/auth/token: the answer holds no access_token"))
	}
	c.hubTok, c.hubExp = doc.AccessToken, c.now().Add(hubTokenFallback)
	var claims jwt.RegisteredClaims
	// Not verified: Docker Hub verifies it; we only need its expiry.
	if _, _, err := jwt.NewParser().ParseUnverified(doc.AccessToken, &claims); err == nil && claims.ExpiresAt != nil {
		c.hubExp = claims.ExpiresAt.Time
	}
	return c.hubTok, nil
}

// dropHubToken forgets a token the Hub refused.
func (c *Connector) dropHubToken() {
	c.hubSem <- struct{}{}
	c.hubTok = ""
	<-c.hubSem
}

// hub sends one Hub API request (a JSON body for POST) and decodes the
// JSON answer into v. token "" sends none.
func (c *Connector) hub(ctx context.Context, method, path string, query url.Values, body []byte, token string, v any) (http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	op := method + " " + path
	u := *c.hubBase
	u.Path = path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fault.Permanent(fmt.Errorf("%s: %w", op, err))
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "inthub-connector")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
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
		return nil, hubFailure(op, resp, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fault.Transient(fmt.Errorf("%s: malformed JSON answer: %w", op, err))
	}
	return resp.Header, nil
}

// hubFailure classifies with the shared rules (x-ratelimit-reset gives
// a 429 its wait) and keeps the Hub's own message.
func hubFailure(op string, resp *http.Response, body []byte) error {
	err := connectors.ClassifyHTTP(resp, nil)
	if err == nil {
		err = fault.Permanent(&connectors.RequestError{Host: resp.Request.URL.Host, StatusCode: resp.StatusCode,
			Reason: fmt.Sprintf("%d %s: unexpected redirect", resp.StatusCode, http.StatusText(resp.StatusCode))})
	}
	var doc struct {
		Message string `json:"message"`
		Detail  string `json:"detail"`
	}
	_ = json.Unmarshal(body, &doc)
	msg := doc.Message
	if msg == "" {
		msg = doc.Detail
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	switch {
	case msg != "":
		err = fmt.Errorf("%s: %w: %s", op, err, msg)
	default:
		err = fmt.Errorf("%s: %w", op, err)
	}
	if resp.StatusCode == http.StatusUnauthorized && strings.HasSuffix(op, "/v2/auth/token") {
		err = fmt.Errorf("%w (check username and that token is a valid personal access token)", err)
	}
	return err
}

type hubRepo struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Private   bool   `json:"is_private"`
}

// ListRepositories lists one page of the namespace's repositories
// (GET /v2/namespaces/{namespace}/repositories). Anonymously, or as a user
// outside the namespace, only public ones are listed.
func (c *Connector) ListRepositories(ctx context.Context, o connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	var out connectors.Page[connectors.Repository]
	if err := c.Validate(); err != nil {
		return out, err
	}
	page, err := oci.PageOf(Type, o.Cursor)
	if err != nil {
		return out, err
	}
	size := hubPageSize
	if o.Limit > 0 {
		size = min(o.Limit, hubMaxPageSize)
	}
	token := ""
	if c.conf.Username != "" {
		if token, err = c.hubToken(ctx); err != nil {
			return out, err
		}
	}
	var doc struct {
		Count   int       `json:"count"`
		Next    *string   `json:"next"`
		Results []hubRepo `json:"results"`
	}
	path := "/v2/namespaces/" + url.PathEscape(c.conf.Namespace) + "/repositories"
	q := url.Values{"page": {strconv.Itoa(page)}, "page_size": {strconv.Itoa(size)}, "ordering": {"name"}}
	if _, err := c.hub(ctx, http.MethodGet, path, q, nil, token, &doc); err != nil {
		var re *connectors.RequestError
		if token != "" && errors.As(err, &re) && re.StatusCode == http.StatusUnauthorized {
			c.dropHubToken()
		}
		return out, err
	}
	out.Items = make([]connectors.Repository, 0, len(doc.Results))
	for _, r := range doc.Results {
		ns := r.Namespace
		if ns == "" {
			ns = c.conf.Namespace
		}
		full := ns + "/" + r.Name
		out.Items = append(out.Items, connectors.Repository{ID: full, FullName: full, Private: r.Private})
	}
	// next is only a signal: the cursor is our own page number, so a
	// caller cannot steer a request elsewhere through it.
	if doc.Next != nil && *doc.Next != "" && len(doc.Results) > 0 {
		out.Next = oci.NextPage(page + 1)
	}
	return out, nil
}
