package vault_test

import (
	"slices"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/vault"
	"inthub.dev/pkg/connectors/vault/vaulttest"
	"inthub.dev/pkg/fault"
)

func TestListResources(t *testing.T) {
	fv := vaulttest.New(t, vaulttest.Options{})
	fv.Mount("team/kv", "kv", 2)
	c := newConnector(t, fv.URL, tokenAuth(), goodSecrets(fv), nil)

	kinds := connectors.ResourceKindsOf(c, vault.Info(nil).Capabilities)
	if len(kinds) != 1 || kinds[0].Name != vault.CheckKVMounts || kinds[0].InRepo {
		t.Fatalf("kinds %+v, want kv_mounts alone, listed without a repository", kinds)
	}
	if !slices.Contains(vault.Info(nil).Capabilities, kinds[0].Name) {
		t.Error("the kind is not among the type's capabilities (/integration-types would not show it)")
	}

	for _, tt := range []struct {
		name  string
		kind  string
		o     connectors.ListOptions
		want  string // "path@version ..." of the page
		next  bool
		class fault.Class
		says  string
	}{
		{name: "every mount", kind: vault.CheckKVMounts, want: "legacy@1 secret@2 team/kv@2"},
		{name: "first page", kind: vault.CheckKVMounts, o: connectors.ListOptions{Limit: 2}, want: "legacy@1 secret@2", next: true},
		{name: "after a cursor", kind: vault.CheckKVMounts, o: connectors.ListOptions{Cursor: "secret"}, want: "team/kv@2"},
		{name: "unknown kind", kind: "repos", class: fault.ClassPermanent, says: "cannot list"},
		{name: "negative limit", kind: vault.CheckKVMounts, o: connectors.ListOptions{Limit: -1}, class: fault.ClassPermanent, says: "negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := c.ListResources(t.Context(), tt.kind, "", tt.o)
			if tt.says != "" {
				if fault.ClassOf(err) != tt.class || err == nil || !strings.Contains(err.Error(), tt.says) {
					t.Fatalf("err %v (class %v), want %v saying %q", err, fault.ClassOf(err), tt.class, tt.says)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range p.Items {
				if r.ID != r.Name || r.Attributes["version"] == "" {
					t.Errorf("resource %+v: want the path as id and name, and the version", r)
				}
				got = append(got, r.Name+"@"+r.Attributes["version"])
			}
			if strings.Join(got, " ") != tt.want || (p.Next != "") != tt.next {
				t.Errorf("page %v next %q, want %s (next page: %v)", got, p.Next, tt.want, tt.next)
			}
		})
	}
}
