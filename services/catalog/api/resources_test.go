package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
	"inthub.dev/pkg/connectors/vault/vaulttest"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/catalog/store"
)

func portNumber(t *testing.T, rawURL string) int {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	_, p, err := net.SplitHostPort(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// TestResourcesOfTypeKinds lists the kinds a connector declares beyond
// repos, branches and tags, end to end: the catalog API, connect and the
// providers' connectors against their fakes (a Vault's KV mounts, a
// GitLab project's pipelines).
func TestResourcesOfTypeKinds(t *testing.T) {
	const (
		vaultRef  = "authref://env/INTHUB_TEST_VAULT_TOKEN"
		gitlabRef = "authref://env/INTHUB_TEST_GITLAB_TOKEN"
		glToken   = "glpat-ResourcesT0ken000000"
	)
	fv := vaulttest.New(t, vaulttest.Options{})
	fv.Mount("team/kv", "kv", 2)
	fg := gitlabtest.New(t, gitlabtest.Options{})
	fg.AddProject(gitlabtest.Project{ID: 1, Path: "acme/api", Branches: []string{"main"}})
	fg.AddToken(glToken, gitlabtest.Token{User: "ci-bot", Scopes: []string{"read_api"}, Member: []string{"acme/api"}})
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var ps []gitlabtest.Pipeline
	for i := range 3 {
		ps = append(ps, gitlabtest.Pipeline{Ref: "main", SHA: gitlabtest.SHA(fmt.Sprint(i)), Status: "success", CreatedAt: base.Add(time.Duration(i) * time.Minute)})
	}
	fg.AddPipelines("acme/api", ps...)
	t.Setenv("INTHUB_TEST_VAULT_TOKEN", vaulttest.RootToken)
	t.Setenv("INTHUB_TEST_GITLAB_TOKEN", glToken)

	// The fakes listen on loopback over http: the policy lets exactly them through.
	e := newConnectEnv(t, egress.Policy{AllowHTTP: true, AllowLoopback: true,
		AllowPorts: []int{portNumber(t, fv.URL), portNumber(t, fg.URL())}})
	ctx := context.Background()
	var types []store.IntegrationType
	for _, id := range []string{"vault.hashicorp", "ci.gitlab_ci"} {
		info, ok := connectors.Default().Lookup(id)
		if !ok {
			t.Fatalf("no connector for %s", id)
		}
		types = append(types, store.IntegrationType{ID: id, DisplayName: info.DisplayName, Provider: info.Provider,
			ConfigSchema: info.ConfigSchema, Capabilities: info.Capabilities, Builtin: true})
	}
	if err := store.SeedTypes(ctx, e.owner, types); err != nil {
		t.Fatal(err)
	}
	c := e.newCaller()
	v := e.validator(t, c)
	create := func(typ, name string, config map[string]any) string {
		t.Helper()
		raw, _ := json.Marshal(config)
		// Written past the save-time check, which refuses loopback
		// endpoints whatever the policy.
		it, err := e.store.CreateIntegration(ctx, c.tenant, "test", store.IntegrationInput{Type: typ, Name: name, Config: raw})
		if err != nil {
			t.Fatal(err)
		}
		return it.ID
	}
	vaultID := create("vault.hashicorp", "vault", map[string]any{"address": fv.URL, "auth": map[string]any{"token": vaultRef}, "timeoutSeconds": 5})
	gitlabID := create("ci.gitlab_ci", "gitlab-ci", map[string]any{"endpoint": fg.URL(), "token": gitlabRef, "timeoutSeconds": 5})

	// /integration-types shows each type's kinds among its capabilities.
	r := e.do(c, http.MethodGet, "/api/v1/integration-types/vault.hashicorp", nil)
	want(t, r, http.StatusOK)
	var typ IntegrationType
	r.decode(t, &typ)
	if !slices.Contains(typ.Capabilities, "kv_mounts") {
		t.Errorf("vault.hashicorp capabilities %v lack kv_mounts", typ.Capabilities)
	}

	const path = "/api/v1/integrations/{id}/resources"
	for _, tc := range []struct {
		name, id, query string
		status          int
		names           string // the items' names, for 200
		repo            string
		next            bool
		item            func(Resource) bool
		loc, says       string // the problem's location and detail, for 400
	}{
		{name: "kv mounts", id: vaultID, query: "kind=kv_mounts", status: http.StatusOK, names: "legacy,secret,team/kv",
			item: func(r Resource) bool { return r.ID == r.Name && r.Attributes["version"] != "" }},
		{name: "kv mounts take no repository", id: vaultID, query: "kind=kv_mounts&repo=acme/api&limit=1", status: http.StatusOK, names: "legacy", next: true},
		{name: "pipelines", id: gitlabID, query: "kind=pipelines&repo=acme/api&limit=2", status: http.StatusOK, names: "#3,#2", repo: "acme/api", next: true,
			item: func(r Resource) bool {
				return r.ID != "" && r.URL != "" && r.Attributes["status"] == "success" && r.Attributes["ref"] == "main" && len(r.Attributes["sha"]) == 40
			}},
		{name: "a kind vault does not list", id: vaultID, query: "kind=pipelines", status: http.StatusBadRequest, loc: locKind, says: "they list kv_mounts"},
		{name: "vault has no repositories", id: vaultID, query: "kind=repos", status: http.StatusBadRequest, loc: locKind, says: "they list kv_mounts"},
		{name: "pipelines need a project", id: gitlabID, query: "kind=pipelines", status: http.StatusBadRequest, loc: locRepo, says: "kind=pipelines"},
		{name: "no kind", id: gitlabID, query: "", status: http.StatusBadRequest, loc: locKind, says: "repos, branches, tags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(c, http.MethodGet, "/api/v1/integrations/"+tc.id+"/resources?"+tc.query, nil)
			want(t, r, tc.status)
			v.check(http.MethodGet, path, r)
			if tc.status != http.StatusOK {
				p := r.problem(t)
				if locs := p.locations(); len(locs) != 1 || locs[0] != tc.loc || !strings.Contains(string(r.Body), tc.says) {
					t.Errorf("problem %s, want one at %s saying %q", r.Body, tc.loc, tc.says)
				}
				return
			}
			var l ResourceList
			r.decode(t, &l)
			var names []string
			for _, it := range l.Items {
				names = append(names, it.Name)
				if tc.item != nil && !tc.item(it) {
					t.Errorf("item %+v lacks its kind's fields", it)
				}
			}
			if strings.Join(names, ",") != tc.names || l.Repo != tc.repo || (l.NextCursor != "") != tc.next || l.Cached {
				t.Errorf("list %s, want %s in %q (next page: %v)", r.Body, tc.names, tc.repo, tc.next)
			}
		})
	}

	// The discovery cache keeps these kinds as the others.
	before := fv.Requests("/v1/sys/mounts")
	for range 2 {
		r := e.do(c, http.MethodGet, "/api/v1/integrations/"+vaultID+"/resources?kind=kv_mounts", nil)
		want(t, r, http.StatusOK)
		var l ResourceList
		r.decode(t, &l)
		if !l.Cached {
			t.Errorf("a listing asked again within ten minutes was not cached: %s", r.Body)
		}
	}
	if n := fv.Requests("/v1/sys/mounts") - before; n != 0 {
		t.Errorf("%d requests to Vault for cached listings", n)
	}
}
