package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// The catalog's HTTP API (/api/v1) as `inthub dev` (make run) serves it.
const (
	defaultServer = "http://127.0.0.1:8080"
	apiPrefix     = "/api/v1"
	// maxPageSize is the API's bound on ?limit=.
	maxPageSize = 500
	// maxResponseBytes bounds what is read of one answer: a page of 500
	// integrations with their configs is well below it.
	maxResponseBytes = 32 << 20
	requestTimeout   = 60 * time.Second
)

// catalogOpts are the flags of the catalog commands (integrations, types,
// migrate); they live in opts.cat.
type catalogOpts struct {
	server, token, databaseURL string

	typ, cursor    string
	pageSize       int
	all            bool
	idempotencyKey string
	ifMatch        string

	// Set-or-not matters for update (an empty --auth-ref clears it), so
	// these remember whether they were given.
	name, config, authRef, status optString
}

// optString is a string flag that knows whether it was given.
type optString struct {
	v   string
	set bool
}

func (s *optString) String() string { return s.v }
func (s *optString) Set(v string) error {
	s.v, s.set = v, true
	return nil
}

var catalogGroupSummary = map[string]string{
	"integrations": "A tenant's integrations in the catalog (HTTP API): list, get, create, update, delete",
	"types":        "Integration types the catalog offers, with their config schemas: list, get",
	"migrate":      "Apply the catalog's database migrations",
}

func isCatalogGroup(group string) bool {
	_, ok := catalogGroupSummary[group]
	return ok
}

func catalogCommands() []command {
	return []command{
		{
			group: "integrations", name: "list", summary: "list integrations, oldest first",
			about: `Lists the tenant's integrations (the tenant is the token's), in the API's
stable order (creation time, then id). One page by default: when there are
more, the next page's cursor is printed on stderr; --all follows every page.`,
			flags: func(fs *flag.FlagSet, o *opts) {
				fs.StringVar(&o.cat.typ, "type", "", "only integrations of integration type `TYPE` (e.g. scm.github)")
				fs.IntVar(&o.cat.pageSize, "limit", 0, fmt.Sprintf("page size `N`, 1-%d (default: the server's, 50)", maxPageSize))
				fs.StringVar(&o.cat.cursor, "cursor", "", "start at the page `CURSOR` (the nextCursor of the previous page)")
				fs.BoolVar(&o.cat.all, "all", false, "follow nextCursor and list every page")
			},
			run: (*app).integrationsList,
		},
		{
			group: "integrations", name: "get", args: "<id>", summary: "show one integration with its config",
			about: "Shows the integration <id>: every field and its config.",
			flags: func(*flag.FlagSet, *opts) {},
			run:   (*app).integrationsGet,
		},
		{
			group: "integrations", name: "create", summary: "register an integration",
			about: `Registers an integration. The config is checked against the type's config
schema (inthubctl types get <type>); secret fields hold AuthRef URIs
(authref://vault/<path>#<field>, authref://env/<VAR>, authref://file/<path>),
never the secret itself. With --idempotency-key, running the same command
again returns the first result instead of creating a second integration.`,
			flags: func(fs *flag.FlagSet, o *opts) {
				fs.StringVar(&o.cat.typ, "type", "", "integration type `TYPE` (required; inthubctl types list)")
				fs.Var(&o.cat.name, "name", "`NAME`, unique among the tenant's integrations (required)")
				configFlags(fs, o)
				fs.StringVar(&o.cat.idempotencyKey, "idempotency-key", "", "`KEY` that makes a retry of this create return the first result")
			},
			run: (*app).integrationsCreate,
		},
		{
			group: "integrations", name: "update", args: "<id>", summary: "change an integration's name, config, credentials or status",
			about: `Reads the integration, changes the fields given and writes the whole document
back with If-Match, so that a change made by someone else in between fails
(412 Precondition Failed) instead of being overwritten. --config replaces
the whole config. --if-match VERSION requires the version you last saw;
without it the version just read is required.`,
			flags: func(fs *flag.FlagSet, o *opts) {
				fs.Var(&o.cat.name, "name", "new `NAME`")
				configFlags(fs, o)
				fs.StringVar(&o.cat.ifMatch, "if-match", "", "change only if the integration is still at `VERSION`")
			},
			run: (*app).integrationsUpdate,
		},
		{
			group: "integrations", name: "delete", args: "<id>", summary: "delete an integration",
			about: "Deletes the integration <id> (integration.deleted is announced on the bus).",
			flags: func(fs *flag.FlagSet, o *opts) {
				fs.StringVar(&o.cat.ifMatch, "if-match", "", "delete only if the integration is still at `VERSION`")
			},
			run: (*app).integrationsDelete,
		},
		{
			group: "types", name: "list", summary: "list integration types",
			about: "Lists the integration types the catalog offers, ordered by id.",
			flags: func(*flag.FlagSet, *opts) {},
			run:   (*app).typesList,
		},
		{
			group: "types", name: "get", args: "<id>", summary: "show an integration type and its config fields",
			about: `Shows the integration type <id> and the fields of its config schema; fields
marked secret take an AuthRef URI. -o json prints the whole schema.`,
			flags: func(*flag.FlagSet, *opts) {},
			run:   (*app).typesGet,
		},
		{
			group: "migrate", summary: "apply the catalog's database migrations",
			about: `Applies the migrations this build carries that the database has not seen,
each in its own transaction, as the owner of the tables (not inthub_app).
Safe to run from several places at once: an advisory lock serialises them.`,
			flags: func(*flag.FlagSet, *opts) {},
			run:   (*app).migrate,
		},
	}
}

func configFlags(fs *flag.FlagSet, o *opts) {
	fs.Var(&o.cat.config, "config", "config as a `JSON` object, or @FILE holding one")
	fs.Var(&o.cat.authRef, "auth-ref", "AuthRef `URI` of the credentials (empty: none)")
	fs.Var(&o.cat.status, "status", "`STATUS`: active, disabled or offline")
}

// catalogDefaults fills the catalog settings from the environment.
func (a *app) catalogDefaults(o *opts) {
	o.cat.server = a.env.getenv("INTHUB_SERVER")
	if o.cat.server == "" {
		o.cat.server = defaultServer
	}
	o.cat.token = a.env.getenv("INTHUB_TOKEN")
	o.cat.databaseURL = a.env.getenv("DATABASE_URL")
	if o.cat.databaseURL == "" {
		o.cat.databaseURL = defaultDatabaseURL
	}
}

// serverFlags are accepted before the command too, like --nats-url.
func serverFlags(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.cat.server, "server", o.cat.server, "catalog API base `URL` (env INTHUB_SERVER; default "+defaultServer+")")
	// The default is not shown: it is a credential.
	fs.StringVar(&o.cat.token, "token", o.cat.token, "bearer `TOKEN` for the API (env INTHUB_TOKEN; make run prints a dev token)")
}

// catalogGlobalFlags are the flags every command of the group takes.
func catalogGlobalFlags(fs *flag.FlagSet, o *opts, group string) {
	if group == "migrate" {
		fs.StringVar(&o.cat.databaseURL, "database-url", o.cat.databaseURL, "PostgreSQL `URL` of the owner of the tables (env DATABASE_URL; default "+defaultDatabaseURL+")")
	} else {
		serverFlags(fs, o)
	}
	fs.StringVar(&o.output, "o", o.output, "output `FORMAT`: table or json")
}

// apiClient talks to the catalog's HTTP API.
type apiClient struct {
	server string // as given, for messages
	base   *url.URL
	token  string
	hc     *http.Client
}

// client checks the server and token; the returned func releases the
// client's connections.
func (a *app) client(c string, o *opts) (*apiClient, func(), error) {
	u, err := url.Parse(strings.TrimSpace(o.cat.server))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, usagef(c, "--server: %q is not an http(s) URL such as %s", o.cat.server, defaultServer)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, nil, usagef(c, "--server: give only scheme, host and an optional path prefix (no user, query or fragment)")
	}
	tok := strings.TrimSpace(o.cat.token)
	if tok == "" {
		return nil, nil, usagef(c, "no API token: pass --token or set INTHUB_TOKEN (`make run` prints a dev token)")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	cl := &apiClient{server: o.cat.server, base: u, token: tok, hc: &http.Client{Transport: tr, Timeout: requestTimeout}}
	return cl, tr.CloseIdleConnections, nil
}

// apiResponse is a 2xx answer.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request; an answer other than 2xx is returned as a
// *problemError.
func (cl *apiClient) do(ctx context.Context, method, path string, query url.Values, header http.Header, body []byte) (*apiResponse, error) {
	// path is already escaped (an id from the command line goes through
	// url.PathEscape), so the URL is put together as text.
	target := cl.base.String() + apiPrefix + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+cl.token)
	req.Header.Set("Accept", "application/json, application/problem+json")
	req.Header.Set("User-Agent", "inthubctl")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// url.Error repeats the URL; the message says it once.
			err = ue.Err
		}
		return nil, fmt.Errorf("catalog API at %s: %s %s: %w (is the catalog running? set --server or INTHUB_SERVER)", cl.server, method, apiPrefix+path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("catalog API at %s: read the answer to %s %s: %w", cl.server, method, apiPrefix+path, err)
	}
	if len(b) > maxResponseBytes {
		return nil, fmt.Errorf("catalog API at %s: the answer to %s %s is larger than %d MiB", cl.server, method, apiPrefix+path, maxResponseBytes>>20)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, newProblemError(resp.StatusCode, resp.Header, b)
	}
	return &apiResponse{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// problemError is an API error: an RFC 9457 problem document (or, from
// something that is not the catalog, whatever came back).
type problemError struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Location string `json:"location"`
		Message  string `json:"message"`
	} `json:"errors"`
	hint string
}

func newProblemError(status int, h http.Header, body []byte) *problemError {
	p := &problemError{}
	if json.Unmarshal(body, p) != nil || (p.Title == "" && p.Detail == "" && p.Status == 0) {
		// Not a problem document (a proxy's page, a plain-text error):
		// its beginning is the best detail there is.
		p = &problemError{Detail: truncate(string(body), 200)}
		if p.Detail == "-" {
			p.Detail = ""
		}
	}
	if p.Status == 0 {
		p.Status = status
	}
	if p.Title == "" {
		p.Title = http.StatusText(status)
	}
	switch status {
	case http.StatusUnauthorized:
		p.hint = "the token was refused: check --token or INTHUB_TOKEN (expired? `make run` prints a new dev token)"
		if wa := h.Get("WWW-Authenticate"); wa != "" {
			p.hint += "; the server says: " + oneLine(wa)
		}
	case http.StatusForbidden:
		p.hint = "the token lacks the scope this needs: integrations:read to read, integrations:write to change"
	case http.StatusPreconditionFailed:
		p.hint = "the integration changed since it was read: get it again and retry"
	}
	return p
}

// Error is the text printed for the error, every line of it:
//
//	error: <title> (<status>): <detail>
//	  <location>: <message>
//
// Values from the server go through oneLine, so they cannot forge lines.
func (e *problemError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "error: %s (%d)", oneLine(e.Title), e.Status)
	if d := oneLine(e.Detail); d != "" {
		fmt.Fprintf(&b, ": %s", d)
	}
	b.WriteByte('\n')
	for _, d := range e.Errors {
		loc, msg := oneLine(d.Location), oneLine(d.Message)
		if loc == "" {
			fmt.Fprintf(&b, "  %s\n", msg)
			continue
		}
		fmt.Fprintf(&b, "  %s: %s\n", loc, msg)
	}
	if e.hint != "" {
		fmt.Fprintf(&b, "hint: %s\n", e.hint)
	}
	return b.String()
}

// integrationView is what the tables read of an integration; the JSON
// output is the API's own bytes, so fields added to the API show there
// without a change here.
type integrationView struct {
	ID              string          `json:"id"`
	TenantID        string          `json:"tenantId"`
	Type            string          `json:"type"`
	Name            string          `json:"name"`
	Config          json.RawMessage `json:"config"`
	AuthRef         string          `json:"authRef"`
	Status          string          `json:"status"`
	HealthStatus    string          `json:"healthStatus"`
	LastHealthCheck *time.Time      `json:"lastHealthCheck"`
	Version         int64           `json:"version"`
	CreatedAt       time.Time       `json:"createdAt"`
	UpdatedAt       time.Time       `json:"updatedAt"`
	CreatedBy       string          `json:"createdBy"`
}

// integrationInput is the body of a create and of an update: the API
// refuses any other field.
type integrationInput struct {
	Type    string          `json:"type"`
	Name    string          `json:"name"`
	Config  json.RawMessage `json:"config,omitempty"`
	AuthRef string          `json:"authRef,omitempty"`
	Status  string          `json:"status,omitempty"`
}

type rawPage struct {
	Items      []json.RawMessage `json:"items"`
	NextCursor string            `json:"nextCursor,omitempty"`
}

func decodeIntegration(b []byte) (integrationView, error) {
	var it integrationView
	if err := json.Unmarshal(b, &it); err != nil {
		return it, fmt.Errorf("the API's answer is not an integration: %w", err)
	}
	return it, nil
}

func integrationPath(id string) string { return "/integrations/" + url.PathEscape(id) }

func oneID(c string, pos []string) (string, error) {
	if len(pos) != 1 {
		return "", usagef(c, "want exactly one <id>, got %d arguments", len(pos))
	}
	if strings.TrimSpace(pos[0]) == "" {
		return "", usagef(c, "<id> is empty")
	}
	return pos[0], nil
}

func (a *app) integrationsList(o *opts, pos []string) error {
	const c = "inthubctl integrations list"
	if err := noArgs(c, pos); err != nil {
		return err
	}
	if o.cat.pageSize < 0 || o.cat.pageSize > maxPageSize {
		return usagef(c, "--limit: %d is not between 1 and %d", o.cat.pageSize, maxPageSize)
	}
	cl, done, err := a.client(c, o)
	if err != nil {
		return err
	}
	defer done()
	q := url.Values{}
	if o.cat.typ != "" {
		q.Set("type", o.cat.typ)
	}
	if o.cat.pageSize > 0 {
		q.Set("limit", strconv.Itoa(o.cat.pageSize))
	}
	cursor := o.cat.cursor
	var all rawPage
	all.Items = []json.RawMessage{}
	for {
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		resp, err := cl.do(a.ctx, http.MethodGet, "/integrations", q, nil, nil)
		if err != nil {
			return err
		}
		if !o.cat.all && o.output == "json" {
			return writeRawJSON(a.stdout, resp.body)
		}
		var page rawPage
		if err := json.Unmarshal(resp.body, &page); err != nil {
			return fmt.Errorf("the API's answer is not a list of integrations: %w", err)
		}
		all.Items = append(all.Items, page.Items...)
		if !o.cat.all || page.NextCursor == "" {
			all.NextCursor = page.NextCursor
			break
		}
		if page.NextCursor == cursor {
			return fmt.Errorf("the API returned the same cursor twice (%q); stopping", cursor)
		}
		cursor = page.NextCursor
	}
	if o.output == "json" {
		// --all: one document with every item, as if it were one page.
		return writeJSON(a.stdout, all)
	}
	its := make([]integrationView, 0, len(all.Items))
	for _, raw := range all.Items {
		it, err := decodeIntegration(raw)
		if err != nil {
			return err
		}
		its = append(its, it)
	}
	if err := writeIntegrationTable(a.stdout, its); err != nil {
		return err
	}
	if all.NextCursor != "" {
		// On stderr, so the table on stdout stays only rows.
		fmt.Fprintf(a.stderr, "more integrations: add --cursor %s for the next page, or --all for every page\n", all.NextCursor)
	}
	return nil
}

func (a *app) integrationsGet(o *opts, pos []string) error {
	const c = "inthubctl integrations get"
	id, err := oneID(c, pos)
	if err != nil {
		return err
	}
	cl, done, err := a.client(c, o)
	if err != nil {
		return err
	}
	defer done()
	resp, err := cl.do(a.ctx, http.MethodGet, integrationPath(id), nil, nil, nil)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeRawJSON(a.stdout, resp.body)
	}
	it, err := decodeIntegration(resp.body)
	if err != nil {
		return err
	}
	return writeIntegrationDetail(a.stdout, it)
}

// configValue reads --config: a JSON object, or @file holding one.
func configValue(c, v string) (json.RawMessage, error) {
	b := []byte(v)
	src := "--config"
	if name, ok := strings.CutPrefix(v, "@"); ok {
		var err error
		if b, err = os.ReadFile(name); err != nil {
			return nil, usagef(c, "--config: %v", err)
		}
		src = "--config " + v
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		reason := "it is not"
		if err != nil {
			reason = err.Error()
		}
		return nil, usagef(c, "%s: want a JSON object such as '{\"healthy\": true}' (%s)", src, reason)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, usagef(c, "%s: %v", src, err)
	}
	return buf.Bytes(), nil
}

func checkStatus(c string, s optString) error {
	if !s.set {
		return nil
	}
	switch s.v {
	case "active", "disabled", "offline":
		return nil
	}
	return usagef(c, "--status: %q is not active, disabled or offline", s.v)
}

// versionTag turns --if-match (3 or "3", as printed by get or as an ETag)
// into the entity tag the API compares.
func versionTag(c, v string) (string, error) {
	s := strings.Trim(strings.TrimSpace(v), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return "", usagef(c, "--if-match: %q is not a version (a positive integer, as VERSION in the list)", v)
	}
	return `"` + strconv.FormatInt(n, 10) + `"`, nil
}

func (a *app) integrationsCreate(o *opts, pos []string) error {
	const c = "inthubctl integrations create"
	if err := noArgs(c, pos); err != nil {
		return err
	}
	in := integrationInput{Type: strings.TrimSpace(o.cat.typ), Name: o.cat.name.v, AuthRef: o.cat.authRef.v, Status: o.cat.status.v}
	var missing []string
	if in.Type == "" {
		missing = append(missing, "--type")
	}
	if strings.TrimSpace(in.Name) == "" {
		missing = append(missing, "--name")
	}
	if len(missing) > 0 {
		return usagef(c, "%s required", strings.Join(missing, " and "))
	}
	if err := checkStatus(c, o.cat.status); err != nil {
		return err
	}
	if o.cat.config.set {
		cfg, err := configValue(c, o.cat.config.v)
		if err != nil {
			return err
		}
		in.Config = cfg
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	cl, done, err := a.client(c, o)
	if err != nil {
		return err
	}
	defer done()
	h := http.Header{}
	if o.cat.idempotencyKey != "" {
		h.Set("Idempotency-Key", o.cat.idempotencyKey)
	}
	resp, err := cl.do(a.ctx, http.MethodPost, "/integrations", nil, h, body)
	if err != nil {
		return err
	}
	if resp.header.Get("Idempotency-Replayed") == "true" {
		fmt.Fprintln(a.stderr, "note: an earlier create with this --idempotency-key succeeded; this is its result, nothing new was created")
	}
	return a.printIntegration(o, resp.body)
}

func (a *app) printIntegration(o *opts, body []byte) error {
	if o.output == "json" {
		return writeRawJSON(a.stdout, body)
	}
	it, err := decodeIntegration(body)
	if err != nil {
		return err
	}
	return writeIntegrationTable(a.stdout, []integrationView{it})
}

func (a *app) integrationsUpdate(o *opts, pos []string) error {
	const c = "inthubctl integrations update"
	id, err := oneID(c, pos)
	if err != nil {
		return err
	}
	if !o.cat.name.set && !o.cat.config.set && !o.cat.authRef.set && !o.cat.status.set {
		return usagef(c, "nothing to change: give --name, --config, --auth-ref or --status")
	}
	if o.cat.name.set && strings.TrimSpace(o.cat.name.v) == "" {
		return usagef(c, "--name: a name cannot be empty")
	}
	if err := checkStatus(c, o.cat.status); err != nil {
		return err
	}
	var cfg json.RawMessage
	if o.cat.config.set {
		if cfg, err = configValue(c, o.cat.config.v); err != nil {
			return err
		}
	}
	var tag string
	if o.cat.ifMatch != "" {
		if tag, err = versionTag(c, o.cat.ifMatch); err != nil {
			return err
		}
	}
	cl, done, err := a.client(c, o)
	if err != nil {
		return err
	}
	defer done()

	// PUT replaces the document: start from what is stored now.
	resp, err := cl.do(a.ctx, http.MethodGet, integrationPath(id), nil, nil, nil)
	if err != nil {
		return err
	}
	cur, err := decodeIntegration(resp.body)
	if err != nil {
		return err
	}
	if tag == "" {
		// The version just read: whoever changes the integration between
		// this GET and the PUT makes the PUT fail rather than be lost.
		if tag = resp.header.Get("ETag"); tag == "" {
			tag = `"` + strconv.FormatInt(cur.Version, 10) + `"`
		}
	}
	in := integrationInput{Type: cur.Type, Name: cur.Name, Config: cur.Config, AuthRef: cur.AuthRef, Status: cur.Status}
	if o.cat.name.set {
		in.Name = o.cat.name.v
	}
	if o.cat.config.set {
		in.Config = cfg
	}
	if o.cat.authRef.set {
		in.AuthRef = strings.TrimSpace(o.cat.authRef.v)
	}
	if o.cat.status.set {
		in.Status = o.cat.status.v
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	resp, err = cl.do(a.ctx, http.MethodPut, integrationPath(id), nil, http.Header{"If-Match": {tag}}, body)
	if err != nil {
		return err
	}
	return a.printIntegration(o, resp.body)
}

func (a *app) integrationsDelete(o *opts, pos []string) error {
	const c = "inthubctl integrations delete"
	id, err := oneID(c, pos)
	if err != nil {
		return err
	}
	h := http.Header{}
	if o.cat.ifMatch != "" {
		tag, err := versionTag(c, o.cat.ifMatch)
		if err != nil {
			return err
		}
		h.Set("If-Match", tag)
	}
	cl, done, err := a.client(c, o)
	if err != nil {
		return err
	}
	defer done()
	if _, err := cl.do(a.ctx, http.MethodDelete, integrationPath(id), nil, h, nil); err != nil {
		return err
	}
	if o.output == "json" {
		// The API answers 204 without a body; scripts get the outcome.
		return writeJSON(a.stdout, struct {
			ID      string `json:"id"`
			Deleted bool   `json:"deleted"`
		}{id, true})
	}
	_, err = fmt.Fprintf(a.stdout, "deleted integration %s\n", id)
	return err
}

// typeView is what the tables read of an integration type.
type typeView struct {
	ID           string          `json:"id"`
	DisplayName  string          `json:"displayName"`
	Description  string          `json:"description"`
	Provider     string          `json:"provider"`
	ConfigSchema json.RawMessage `json:"configSchema"`
	Capabilities []string        `json:"capabilities"`
	Builtin      bool            `json:"builtin"`
}

func (a *app) typesList(o *opts, pos []string) error {
	const c = "inthubctl types list"
	if err := noArgs(c, pos); err != nil {
		return err
	}
	cl, done, err := a.client(c, o)
	if err != nil {
		return err
	}
	defer done()
	resp, err := cl.do(a.ctx, http.MethodGet, "/integration-types", nil, nil, nil)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeRawJSON(a.stdout, resp.body)
	}
	var list struct {
		Items []typeView `json:"items"`
	}
	if err := json.Unmarshal(resp.body, &list); err != nil {
		return fmt.Errorf("the API's answer is not a list of integration types: %w", err)
	}
	return writeTypeTable(a.stdout, list.Items)
}

func (a *app) typesGet(o *opts, pos []string) error {
	const c = "inthubctl types get"
	id, err := oneID(c, pos)
	if err != nil {
		return err
	}
	cl, done, err := a.client(c, o)
	if err != nil {
		return err
	}
	defer done()
	resp, err := cl.do(a.ctx, http.MethodGet, "/integration-types/"+url.PathEscape(id), nil, nil, nil)
	if err != nil {
		return err
	}
	if o.output == "json" {
		return writeRawJSON(a.stdout, resp.body)
	}
	var t typeView
	if err := json.Unmarshal(resp.body, &t); err != nil {
		return fmt.Errorf("the API's answer is not an integration type: %w", err)
	}
	return writeTypeDetail(a.stdout, t)
}
