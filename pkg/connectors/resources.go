package connectors

import (
	"context"
	"slices"
)

// The kinds a Discoverer lists. A type lists those of them it names among
// its Info.Capabilities (a registry has no branches).
const (
	KindRepos    = "repos"
	KindBranches = "branches"
	KindTags     = "tags"
)

// DiscovererKinds are the kinds of Discoverer, in the order the API
// documents them.
var DiscovererKinds = []ResourceKind{
	{Name: KindRepos, Description: "repositories (a registry's repositories or packages)"},
	{Name: KindBranches, InRepo: true, Description: "branches of a repository"},
	{Name: KindTags, InRepo: true, Description: "tags of a repository"},
}

// ResourceKind is a kind of resource a connector lists.
type ResourceKind struct {
	// Name is how discovery queries name it ("workflows"): lower case
	// letters, digits and underscores. A type also names its kinds among
	// its Info.Capabilities, so that /integration-types shows them.
	Name string `json:"name"`
	// InRepo says the kind is listed within one repository (a GitLab
	// project), which the query must name.
	InRepo bool `json:"inRepo,omitempty"`
	// Description says what a resource of the kind is, for people.
	Description string `json:"description,omitempty"`
}

// Resource is one listed resource of any kind. Attributes carry what the
// kind has beyond a name (a run's status, a mount's KV version), as
// strings so that every kind fits one API shape.
type Resource struct {
	ID         string            `json:"id,omitempty"`
	Name       string            `json:"name"`
	URL        string            `json:"url,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
}

// ResourceLister is implemented by connectors that list resources other
// than repositories, branches and tags (Discoverer): a Vault's KV mounts,
// a repository's workflows and runs, a project's pipelines. Discovery asks
// it for any kind it declares, so a provider adds a kind without a change
// to the catalog or to connect.
type ResourceLister interface {
	// ResourceKinds are the kinds ListResources lists. They do not depend
	// on the config: a type lists the same kinds for every integration.
	ResourceKinds() []ResourceKind
	// ListResources lists one page of kind; repo names the repository
	// of an InRepo kind and is "" otherwise. A kind the connector does
	// not declare is a permanent error.
	ListResources(ctx context.Context, kind, repo string, o ListOptions) (Page[Resource], error)
}

// ResourceKindsOf lists the kinds c lists: the Discoverer kinds that its
// type names among capabilities, then its ResourceLister kinds, each once.
func ResourceKindsOf(c Connector, capabilities []string) []ResourceKind {
	var out []ResourceKind
	if _, ok := c.(Discoverer); ok {
		for _, k := range DiscovererKinds {
			if slices.Contains(capabilities, k.Name) {
				out = append(out, k)
			}
		}
	}
	if l, ok := c.(ResourceLister); ok {
		for _, k := range l.ResourceKinds() {
			if !slices.ContainsFunc(out, func(o ResourceKind) bool { return o.Name == k.Name }) {
				out = append(out, k)
			}
		}
	}
	return out
}

// FindResourceKind returns the kind named name among kinds.
func FindResourceKind(kinds []ResourceKind, name string) (ResourceKind, bool) {
	i := slices.IndexFunc(kinds, func(k ResourceKind) bool { return k.Name == name })
	if i < 0 {
		return ResourceKind{}, false
	}
	return kinds[i], true
}
