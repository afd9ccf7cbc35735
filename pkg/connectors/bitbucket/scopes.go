package bitbucket

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"inthub.dev/pkg/connectors"
)

// cloudRequired are the Cloud scopes the integration's operations need:
// pull-request comments are pullrequest:write; commit statuses and Code
// Insights reports take repository; discovery takes repository.
var cloudRequired = []string{"pullrequest:write", "repository"}

// cloudImplied are the Cloud scopes each scope grants besides itself
// (Bitbucket's scope documentation: a write scope implies its read, a
// pull-request scope implies repository, pullrequest:write implies
// repository:write; repository:admin implies nothing).
var cloudImplied = map[string][]string{
	"repository:write":  {"repository"},
	"pullrequest":       {"repository"},
	"pullrequest:write": {"pullrequest", "repository", "repository:write"},
}

// dcRequired is the Data Center permission the integration needs on its
// project: it lists the project's repositories (discovery) and annotates
// any of them. Comments, build statuses and Code Insights reports take
// REPO_READ, which PROJECT_READ grants on every repository; REPO_WRITE is
// reported where granted but not needed.
const dcRequired = "PROJECT_READ"

var _ connectors.ScopeReporter = (*Connector)(nil)

// Scopes reports what the integration's credential may do.
//
// Cloud tells a credential's scopes on every answer (X-OAuth-Scopes), as
// for app passwords and access tokens; the report reads them from one page
// of the workspace's repositories, or from the scopes a refusal lists.
// A credential whose answers carry none (an API token without scopes) has
// no scopes to report (ErrScopesNotReported).
//
// Data Center has no such header: the report asks the permission-filtered
// listings which permissions the credential holds on the project
// (projects?permission=PROJECT_READ, repos?projectkey=…&permission=…).
func (c *Connector) Scopes(ctx context.Context) (connectors.ScopeReport, error) {
	if c.confErr != nil {
		return connectors.ScopeReport{}, c.confErr
	}
	cred, err := c.credential(ctx)
	if err != nil {
		return connectors.ScopeReport{}, err
	}
	if c.cloud() {
		return c.cloudScopes(ctx, cred)
	}
	return c.dcPermissions(ctx, cred)
}

// headerRecorder keeps the headers of the last answer a client received.
type headerRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	last http.Header
}

func (h *headerRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(req)
	if resp != nil {
		h.mu.Lock()
		h.last = resp.Header.Clone()
		h.mu.Unlock()
	}
	return resp, err
}

func (h *headerRecorder) header() http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// recording is a copy of c whose calls record their answers' headers:
// the client's answers carry no headers beyond what every call needs.
func (c *Connector) recording() (*Connector, *headerRecorder) {
	rec := &headerRecorder{next: c.client.Transport}
	if rec.next == nil {
		rec.next = http.DefaultTransport
	}
	hc := *c.client
	hc.Transport = rec
	cc := *c
	cc.client = &hc
	return &cc, rec
}

// splitScopes reads "account, repository:write" (Cloud separates with a
// comma and a space; curl users have met other white space in it).
func splitScopes(v string) []string {
	var out []string
	for _, s := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// classicScope names a scoped API token's scope ("write:pullrequest:bitbucket")
// as the classic one it stands for, and leaves a classic one as it is.
func classicScope(s string) string {
	for classic, g := range granularScopes {
		if g == s {
			return classic
		}
	}
	return s
}

// cloudCovers reports whether granted (classic or granular names) grant need.
func cloudCovers(granted []string, need string) bool {
	for _, g := range granted {
		g = classicScope(g)
		if g == need || slices.Contains(cloudImplied[g], need) {
			return true
		}
	}
	return false
}

func (c *Connector) cloudScopes(ctx context.Context, cred credential) (connectors.ScopeReport, error) {
	rep := connectors.ScopeReport{Required: slices.Clone(cloudRequired), APIVersion: "2.0"}
	rc, rec := c.recording()
	cl := c.reposCall()
	cl.op = "read the credential's scopes"
	cl.query.Set("pagelen", "1")
	_, err := rc.get(ctx, cred, cl, nil)
	h := rec.header()
	switch {
	case h != nil && h.Get("X-OAuth-Scopes") != "":
		rep.Granted = splitScopes(h.Get("X-OAuth-Scopes"))
	case err != nil && statusOf(err) == http.StatusForbidden && len(saidOf(err).granted) > 0:
		rep.Granted = splitScopes(strings.Join(saidOf(err).granted, ","))
	case err != nil:
		return rep, err
	default:
		return rep, fmt.Errorf("bitbucket: Bitbucket Cloud named no scopes for this credential (an API token without scopes, or an account password): %w",
			connectors.ErrScopesNotReported)
	}
	for _, need := range cloudRequired {
		if !cloudCovers(rep.Granted, need) {
			rep.Missing = append(rep.Missing, need)
		}
	}
	if len(rep.Missing) == 0 {
		return rep, nil
	}
	missing := strings.Join(rep.Missing, " and ")
	var granular []string
	for _, m := range rep.Missing {
		granular = append(granular, granularScopes[m])
	}
	ws := url.PathEscape(c.owner)
	if c.bearer() {
		rep.Suggestions = []string{
			"Create a workspace, project or repository access token with the " + missing + " scopes and store it where the integration's token AuthRef points; an access token's scopes cannot be changed after it is created.",
			"Workspace access tokens: " + c.web + "/" + ws + "/workspace/settings/access-tokens",
		}
	} else {
		rep.Suggestions = []string{
			"Create an app password with the " + missing + " permissions (or a scoped API token with " + strings.Join(granular, ", ") +
				") and store it where the integration's password AuthRef points; an app password's permissions cannot be changed after it is created.",
			"App passwords: " + c.web + "/account/settings/app-passwords/",
		}
	}
	auth := `--header "Authorization: Bearer $BITBUCKET_TOKEN"`
	if !c.bearer() {
		auth = `--user "$BITBUCKET_USERNAME:$BITBUCKET_APP_PASSWORD"`
	}
	u := apiURL(c.root, url.Values{"pagelen": {"1"}}, "repositories", c.owner)
	rep.Commands = []string{`curl --silent --output /dev/null --dump-header - ` + auth + ` "` + u.String() + `" | grep -i '^x-oauth-scopes'`}
	return rep, nil
}

func (c *Connector) dcPermissions(ctx context.Context, cred credential) (connectors.ScopeReport, error) {
	rep := connectors.ScopeReport{Required: []string{dcRequired}}
	var p struct {
		Version string `json:"version"`
	}
	if _, err := c.get(ctx, cred, call{op: "read the application properties", elems: []string{"application-properties"}}, &p); err != nil {
		return rep, err
	}
	rep.APIVersion = p.Version
	project := c.owner
	hasProject, err := c.dcProjectPermission(ctx, cred, dcRequired)
	if err != nil {
		return rep, err
	}
	if hasProject {
		rep.Granted = append(rep.Granted, dcRequired)
	}
	// Older instances ignore projectkey: the project is checked in the
	// answer, not trusted to the filter.
	for _, perm := range []string{"REPO_READ", "REPO_WRITE"} {
		var pg page[repo]
		cl := call{op: "list the repositories of project " + project + " with " + perm, elems: []string{"repos"},
			query: url.Values{"projectkey": {project}, "permission": {perm}, "limit": {"25"}}}
		if _, err := c.get(ctx, cred, cl, &pg); err != nil {
			return rep, err
		}
		if slices.ContainsFunc(pg.Values, func(r repo) bool { return r.Project != nil && strings.EqualFold(r.Project.Key, project) }) {
			rep.Granted = append(rep.Granted, perm)
		}
	}
	slices.Sort(rep.Granted)
	if hasProject {
		return rep, nil
	}
	rep.Missing = []string{dcRequired}
	root := c.web
	if slices.Contains(rep.Granted, "REPO_READ") {
		rep.Suggestions = append(rep.Suggestions, "The credential reads some repositories of project "+project+
			" but not the project: discovery lists only those, and annotations of the others are refused.")
	}
	if c.bearer() {
		rep.Suggestions = append(rep.Suggestions,
			"Create an HTTP access token of project "+project+" with Project read (or a personal one with Project read on it) and store it where the integration's token AuthRef points; a token's permissions cannot be raised after it is created.",
			"Project permissions: "+root+"/projects/"+url.PathEscape(project)+"/permissions")
	} else {
		rep.Suggestions = append(rep.Suggestions,
			"Grant the user (or a group of it) Project read on project "+project+".",
			"Project permissions: "+root+"/projects/"+url.PathEscape(project)+"/permissions")
	}
	auth := `--header "Authorization: Bearer $BITBUCKET_TOKEN"`
	if !c.bearer() {
		auth = `--user "$BITBUCKET_USERNAME:$BITBUCKET_PASSWORD"`
	}
	u := apiURL(c.root, url.Values{"permission": {dcRequired}, "limit": {"1000"}}, "projects")
	rep.Commands = []string{`curl --silent ` + auth + ` "` + u.String() + `"`}
	return rep, nil
}

// dcMaxProjectPages bounds the pages of projects read to find one: 10,000
// projects with the permission.
const dcMaxProjectPages = 10

// dcProjectPermission reports whether the credential holds perm on the
// integration's project, from projects?permission= (Data Center filters
// by permission, not by key, so the pages are read until the key shows).
func (c *Connector) dcProjectPermission(ctx context.Context, cred credential, perm string) (bool, error) {
	cursor := ""
	for range dcMaxProjectPages {
		q := url.Values{"permission": {perm}, "limit": {fmt.Sprint(maxDCLimit)}}
		if err := c.applyCursor(q, cursor); err != nil {
			return false, err
		}
		var p page[struct {
			Key string `json:"key"`
		}]
		if _, err := c.get(ctx, cred, call{op: "list the projects with " + perm, elems: []string{"projects"}, query: q}, &p); err != nil {
			return false, err
		}
		if slices.ContainsFunc(p.Values, func(v struct {
			Key string `json:"key"`
		}) bool {
			return strings.EqualFold(v.Key, c.owner)
		}) {
			return true, nil
		}
		cursor = c.cursor(p.Next, p.IsLastPage, p.NextPageStart)
		if cursor == "" {
			return false, nil
		}
	}
	return false, fmt.Errorf("bitbucket: list the projects with %s: more than %d projects, %s not among them: %w",
		perm, dcMaxProjectPages*maxDCLimit, c.owner, connectors.ErrScopesNotReported)
}
