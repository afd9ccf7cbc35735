package gitlab

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"inthub.dev/pkg/connectors"
)

// requiredScope is what the integration needs of an access token: api,
// since comments, commit statuses and discussions are writes (read_api
// lists projects but every annotation would be refused with 403).
const requiredScope = "api"

// minMajor is the oldest GitLab major this connector is built against:
// before 15 there is no personal_access_tokens/self and no diffs endpoint.
const minMajor = 15

var _ connectors.ScopeReporter = (*Connector)(nil)

// Scopes reads the access token's own record (GET personal_access_tokens/
// self) and the instance's version (GET version). A CI job token has no
// scopes to read (ErrScopesNotReported): its rights are its job's.
func (c *Connector) Scopes(ctx context.Context) (connectors.ScopeReport, error) {
	rep := connectors.ScopeReport{Required: []string{requiredScope}}
	if c.jobToken() {
		return rep, fmt.Errorf("gitlab: a CI job token: %w", connectors.ErrScopesNotReported)
	}
	cred, err := c.credential(ctx)
	if err != nil {
		return rep, err
	}
	var v struct {
		Version string `json:"version"`
	}
	if _, err := c.get(ctx, cred, call{op: "read version", elems: []string{"version"}}, &v); err == nil && v.Version != "" {
		rep.APIVersion = v.Version
		if major, ok := majorOf(v.Version); ok && major < minMajor {
			rep.VersionProblem = fmt.Sprintf("GitLab %s is older than %d.0, the oldest this connector supports; upgrade the instance", v.Version, minMajor)
		}
	}
	var t struct {
		Scopes []string `json:"scopes"`
	}
	if _, err := c.get(ctx, cred, call{op: "read the token's scopes", elems: []string{"personal_access_tokens", "self"}}, &t); err != nil {
		if statusOf(err) == http.StatusNotFound {
			return rep, fmt.Errorf("gitlab: this GitLab has no personal_access_tokens/self (before 15.5): %w", connectors.ErrScopesNotReported)
		}
		return rep, err
	}
	rep.Granted = slices.Sorted(slices.Values(t.Scopes))
	if !slices.Contains(t.Scopes, requiredScope) {
		rep.Missing = []string{requiredScope}
		ui := strings.TrimSuffix(c.root.String(), "/api/v4")
		rep.Suggestions = []string{
			"Create an access token with the api scope (a personal access token, or a project or group access token with the Developer role at least) and store it where the integration's token AuthRef points; the old token cannot be given more scopes.",
			"Personal access tokens: " + ui + "/-/user_settings/personal_access_tokens?name=inthub&scopes=api",
		}
		rep.Commands = []string{
			`curl --silent --header "PRIVATE-TOKEN: $GITLAB_TOKEN" ` + c.root.String() + `/personal_access_tokens/self`,
		}
	}
	return rep, nil
}

// majorOf reads the major version of "16.11.2-ee".
func majorOf(v string) (int, bool) {
	head, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(head)
	return n, err == nil
}
