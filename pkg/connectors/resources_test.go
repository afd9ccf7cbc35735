package connectors_test

import (
	"context"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors"
)

// bare is a Connector with no discovery at all.
type bare struct{}

func (bare) Type() string                                     { return "test.bare" }
func (bare) Provider() string                                 { return "bare" }
func (bare) Validate() error                                  { return nil }
func (bare) TestConnection(context.Context) connectors.Result { return connectors.Result{} }
func (bare) CheckHealth(context.Context) connectors.Result    { return connectors.Result{} }
func (bare) Close() error                                     { return nil }

type discoverer struct{ bare }

func (discoverer) ListRepositories(context.Context, connectors.ListOptions) (connectors.Page[connectors.Repository], error) {
	return connectors.Page[connectors.Repository]{}, nil
}
func (discoverer) ListBranches(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Branch], error) {
	return connectors.Page[connectors.Branch]{}, nil
}
func (discoverer) ListTags(context.Context, string, connectors.ListOptions) (connectors.Page[connectors.Tag], error) {
	return connectors.Page[connectors.Tag]{}, nil
}

type kinds struct{}

func (kinds) ResourceKinds() []connectors.ResourceKind {
	return []connectors.ResourceKind{{Name: "workflows", InRepo: true}, {Name: "repos"}}
}
func (kinds) ListResources(context.Context, string, string, connectors.ListOptions) (connectors.Page[connectors.Resource], error) {
	return connectors.Page[connectors.Resource]{}, nil
}

type lister struct {
	bare
	kinds
}

type both struct {
	discoverer
	kinds
}

func TestResourceKindsOf(t *testing.T) {
	for _, tt := range []struct {
		name string
		c    connectors.Connector
		caps []string
		want string
	}{
		{"no discovery", bare{}, []string{"repos", "tags"}, ""},
		{"a discoverer lists what its type declares", discoverer{}, []string{"ping", "repos", "tags", "digest"}, "repos,tags+"},
		{"a discoverer whose type declares nothing", discoverer{}, nil, ""},
		{"a lister", lister{}, nil, "workflows+,repos"},
		{"a discoverer's kinds are its own, listed once", both{}, []string{"repos", "branches"}, "repos,branches+,workflows+"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, k := range connectors.ResourceKindsOf(tt.c, tt.caps) {
				n := k.Name
				if k.InRepo {
					n += "+"
				}
				got = append(got, n)
			}
			if strings.Join(got, ",") != tt.want {
				t.Errorf("kinds %v, want %s", got, tt.want)
			}
		})
	}
	kinds := connectors.ResourceKindsOf(both{}, []string{"repos"})
	if k, ok := connectors.FindResourceKind(kinds, "workflows"); !ok || !k.InRepo {
		t.Errorf("FindResourceKind(workflows) = %+v, %v", k, ok)
	}
	if _, ok := connectors.FindResourceKind(kinds, "tags"); ok {
		t.Error("FindResourceKind found a kind the type does not declare")
	}
}
