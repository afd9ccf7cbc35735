package github

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/bradleyfalzon/ghinstallation/v2"

	"inthub.dev/pkg/connectors"
)

// requiredPermissions are the installation permissions the integration's
// operations need: check runs, pull-request comments and commit statuses
// are writes, and GitHub refuses each with 403 without its permission.
var requiredPermissions = []string{"checks:write", "pull_requests:write", "statuses:write"}

var _ connectors.ScopeReporter = (*Connector)(nil)

// Scopes exchanges the app JWT for a fresh installation token and reads
// the permissions GitHub granted it (the access_tokens answer lists them:
// what the installation accepted, which may be less than the app asks
// for until an owner approves a change). The API version is the one the
// answer says it served, or the GitHub Enterprise Server release.
func (c *Connector) Scopes(ctx context.Context) (connectors.ScopeReport, error) {
	rep := connectors.ScopeReport{Required: slices.Clone(requiredPermissions)}
	if err := c.Validate(); err != nil {
		return rep, err
	}
	rec := &versionRecorder{next: c.base}
	apps, err := ghinstallation.NewAppsTransportWithOptions(rec, c.conf.AppID, ghinstallation.WithSigner(c.signer))
	if err != nil {
		return rep, err
	}
	apps.BaseURL = strings.TrimSuffix(c.ends.api, "/")
	ts := &tokenSource{c: c, inst: ghinstallation.NewFromAppsTransport(apps, c.conf.InstallationID)}
	err = c.call(ctx, op{kind: opToken, name: "exchange the app JWT for an installation token"}, func(ctx context.Context) error {
		_, err := ts.token(ctx)
		return err
	})
	if err != nil {
		return rep, err
	}
	ts.mu.Lock()
	perms, err := ts.inst.Permissions()
	ts.mu.Unlock()
	if err != nil {
		return rep, fmt.Errorf("github: read the installation token's permissions: %w", err)
	}
	// The permissions struct is go-github's, of the version ghinstallation
	// links; its JSON form ({"checks":"write",...}) is stable across them.
	raw, err := json.Marshal(perms)
	if err != nil {
		return rep, err
	}
	var granted map[string]string
	if err := json.Unmarshal(raw, &granted); err != nil {
		return rep, err
	}
	for name, level := range granted {
		rep.Granted = append(rep.Granted, name+":"+level)
	}
	slices.Sort(rep.Granted)
	for _, req := range requiredPermissions {
		name, level, _ := strings.Cut(req, ":")
		if !covers(granted[name], level) {
			rep.Missing = append(rep.Missing, req)
		}
	}
	rep.APIVersion = rec.version()
	if len(rep.Missing) > 0 {
		settings := "https://github.com/settings/apps/<app-slug>/permissions"
		if c.ends.api != "https://api.github.com/" {
			settings = strings.TrimSuffix(strings.TrimSuffix(c.ends.api, "/"), "/api/v3") + "/settings/apps/<app-slug>/permissions"
		}
		rep.Suggestions = []string{
			fmt.Sprintf("Give the GitHub App the permissions %s (Repository permissions) at %s, then have an owner of the installation approve the new permissions: until then installation tokens keep the old ones.",
				strings.Join(rep.Missing, ", "), settings),
		}
		rep.Commands = []string{
			fmt.Sprintf("gh api /app/installations/%d --jq .permissions", c.conf.InstallationID),
		}
	}
	return rep, nil
}

// covers reports whether a granted level ("read", "write", "admin")
// allows what is needed.
func covers(granted, needed string) bool {
	rank := map[string]int{"read": 1, "write": 2, "admin": 3}
	return granted != "" && rank[granted] >= rank[needed]
}

// versionRecorder notes the API version GitHub says it served.
type versionRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	v    string
}

func (r *versionRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		v := resp.Header.Get("X-Github-Enterprise-Version")
		if v != "" {
			v = "GitHub Enterprise Server " + v
		} else {
			v = resp.Header.Get("X-Github-Api-Version-Selected")
		}
		if v != "" {
			r.mu.Lock()
			r.v = v
			r.mu.Unlock()
		}
	}
	return resp, err
}

func (r *versionRecorder) version() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.v
}
