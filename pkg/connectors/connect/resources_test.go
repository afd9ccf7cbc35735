package connect

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"inthub.dev/events"
	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/egress"
	"inthub.dev/pkg/fault"
)

// listerConnector lists "mounts" (no repository) and "jobs" (within
// one) through connectors.ResourceLister, besides repos as a Discoverer.
type listerConnector struct {
	fakeConnector
	calls *atomic.Int64 // ListResources calls
	fail  error
}

func (l *listerConnector) ListRepositories(context.Context, connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	return connectors.Page[connectors.Repository]{Items: []connectors.Repository{{ID: "1", FullName: "acme/api"}}}, nil
}

func (l *listerConnector) ListBranches(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	return connectors.Page[connectors.Branch]{}, fault.Permanentf("no branches here")
}

func (l *listerConnector) ListTags(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	return connectors.Page[connectors.Tag]{}, fault.Permanentf("no tags here")
}

func (l *listerConnector) ResourceKinds() []connectors.ResourceKind {
	return []connectors.ResourceKind{{Name: "mounts"}, {Name: "jobs", InRepo: true}}
}

func (l *listerConnector) ListResources(_ context.Context, kind, repo string, o connectors.ListOptions) (connectors.Page[connectors.Resource], error) {
	l.calls.Add(1)
	if l.fail != nil {
		return connectors.Page[connectors.Resource]{}, l.fail
	}
	name := kind + ":" + repo + ":" + o.Cursor
	return connectors.Page[connectors.Resource]{
		Items: []connectors.Resource{{ID: "7", Name: name, URL: "https://ci.example.com/7", Attributes: map[string]string{"status": "ok"}}},
		Next:  "n",
	}, nil
}

func TestResourcesOfALister(t *testing.T) {
	var calls, closed atomic.Int64
	var provisionErr, listErr error
	reg := connectors.NewRegistry()
	// "branches" is not declared: a Discoverer lists only the kinds its
	// type names.
	reg.Register(connectors.Info{Type: typeFake, Provider: "fake", Capabilities: []string{KindRepos, "mounts", "jobs"}},
		func(connectors.Config) (connectors.Connector, error) {
			return &listerConnector{fakeConnector: fakeConnector{provisionErr: provisionErr, closed: &closed}, calls: &calls, fail: listErr}, nil
		})
	b, err := New(reg, nil, egress.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	it := events.Integration{ID: "0b5c7d1e-8f7a-4c3b-9a2d-1e2f3a4b5c6d", TenantID: "6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b", Type: typeFake, Version: 1}

	kinds, err := b.ResourceKinds(context.Background(), it)
	if err != nil || strings.Join(kindNames(kinds), ",") != "repos,mounts,jobs" {
		t.Fatalf("ResourceKinds = %v, %v", kindNames(kinds), err)
	}

	for _, tt := range []struct {
		name      string
		q         ResourceQuery
		provision error
		list      error
		want      string // the first item's name
		repo      string // the page's repository
		calls     int64  // ListResources calls made
		cached    bool
		err       func(error) bool
	}{
		{name: "a kind without a repository ignores one", q: ResourceQuery{Kind: "mounts", Repo: "acme/api"}, want: "mounts::", calls: 1},
		{name: "a kind within a repository", q: ResourceQuery{Kind: "jobs", Repo: "acme/api", Cursor: "c1"}, want: "jobs:acme/api:c1", repo: "acme/api", calls: 1},
		{name: "the same query is cached", q: ResourceQuery{Kind: "jobs", Repo: "acme/api", Cursor: "c1"}, want: "jobs:acme/api:c1", repo: "acme/api", cached: true},
		{name: "fresh asks again", q: ResourceQuery{Kind: "jobs", Repo: "acme/api", Cursor: "c1", Fresh: true}, want: "jobs:acme/api:c1", repo: "acme/api", calls: 1},
		{name: "the Discoverer's kinds still work", q: ResourceQuery{Kind: KindRepos}, want: "acme/api"},
		{name: "a kind the type does not declare", q: ResourceQuery{Kind: "branches", Repo: "acme/api"}, err: func(err error) bool {
			var ue *UnsupportedError
			return errors.As(err, &ue) && slices.Equal(ue.Supported, []string{"repos", "mounts", "jobs"}) &&
				strings.Contains(err.Error(), "they list repos, mounts, jobs")
		}},
		{name: "an unknown kind is refused before provisioning", q: ResourceQuery{Kind: "pipelines"}, provision: fault.Permanentf("refused"),
			err: func(err error) bool { var ue *UnsupportedError; return errors.As(err, &ue) && ue.Kind == "pipelines" }},
		{name: "no repository", q: ResourceQuery{Kind: "jobs", Repo: " "}, err: func(err error) bool {
			var re *RepoRequiredError
			return errors.As(err, &re) && re.Kind == "jobs"
		}},
		{name: "provisioning fails", q: ResourceQuery{Kind: "mounts", Fresh: true}, provision: fault.Permanentf("refused"), err: func(err error) bool {
			var pe *ProviderError
			return errors.As(err, &pe) && pe.Class() == fault.ClassPermanent
		}},
		{name: "the provider fails", q: ResourceQuery{Kind: "jobs", Repo: "acme/web"}, list: fault.Offline(errors.New("down")), calls: 1, err: func(err error) bool {
			var pe *ProviderError
			return errors.As(err, &pe) && pe.Class() == fault.ClassOffline
		}},
		{name: "a failure is not cached", q: ResourceQuery{Kind: "jobs", Repo: "acme/web"}, want: "jobs:acme/web:", repo: "acme/web", calls: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			provisionErr, listErr = tt.provision, tt.list
			before, closedBefore := calls.Load(), closed.Load()
			p, err := b.Resources(context.Background(), it, tt.q)
			if n := calls.Load() - before; n != tt.calls {
				t.Errorf("%d ListResources calls, want %d", n, tt.calls)
			}
			if !tt.cached && closed.Load() == closedBefore {
				t.Error("the connector was not closed")
			}
			if tt.err != nil {
				if !tt.err(err) {
					t.Fatalf("err %v (%T)", err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Items) != 1 || p.Items[0].Name != tt.want || p.Repo != tt.repo || p.Cached != tt.cached || p.Kind != tt.q.Kind || p.Provider != "fake" {
				t.Fatalf("page %+v, want %q in %q (cached %v)", p, tt.want, tt.repo, tt.cached)
			}
			if r := p.Items[0]; tt.q.Kind != KindRepos && (r.ID != "7" || r.URL == "" || r.Attributes["status"] != "ok" || p.Next != "n") {
				t.Errorf("resource %+v next %q: the lister's fields are lost", r, p.Next)
			}
		})
	}
}
