package oci_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
)

// TestRealRegistry runs the connector against Debian's docker-registry
// (distribution v2.8), with htpasswd basic auth off and on: push images,
// then list tags page by page, resolve tags of a single manifest, a Docker
// v2 manifest and an index, fetch and verify.
func TestRealRegistry(t *testing.T) {
	for _, tt := range []struct {
		name, user, password string
	}{
		{"anonymous", "", ""},
		{"basic auth", "ci-user", "s3cret-Pa55word-for-the-log-check"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			reg := startRegistry(t, tt.user, tt.password)
			p := newPusher(t, reg)

			single := p.image(ctx, "team/app", false, nil)
			p.tag(ctx, "team/app", single, "v1")
			docker := p.image(ctx, "team/app", true, nil)
			p.tag(ctx, "team/app", docker, "v2-docker")
			idx := p.index(ctx, "team/app")
			p.tag(ctx, "team/app", idx, "multi")
			for i := range 4 {
				p.tag(ctx, "team/app", single, fmt.Sprintf("extra-%d", i))
			}

			conf := map[string]any{"endpoint": reg.URL, "insecure": true, "probeRepository": "team/app", "timeoutSeconds": 10}
			sec := secrets{}
			if tt.user != "" {
				conf["username"], conf["password"] = tt.user, "authref://env/REG_PASSWORD"
				sec["authref://env/REG_PASSWORD"] = tt.password
			}
			e := newConnector(t, conf, sec, nil)
			c := e.c

			// Tags, two at a time. distribution v2.8 ignores n on the tag
			// list (it pages only the catalog) and answers the whole list
			// without a Link: the connector must return it all, with no
			// next page. The fake test covers Link-driven tag pages.
			tags := collect(t, func(o connectors.ListOptions) ([]string, string, error) {
				page, err := c.ListTags(ctx, "team/app", o)
				var names []string
				for _, tg := range page.Items {
					names = append(names, tg.Name)
				}
				return names, page.Next, err
			})
			want := []string{"extra-0", "extra-1", "extra-2", "extra-3", "multi", "v1", "v2-docker"}
			if !slices.Equal(tags, want) {
				t.Errorf("tags = %q, want %q", tags, want)
			}

			for _, r := range []struct {
				tag       string
				digest    digest.Digest
				mediaType string
			}{
				{"v1", single.Digest, oci.MediaTypeOCIManifest},
				{"v2-docker", docker.Digest, oci.MediaTypeDockerManifest},
				{"multi", idx.Digest, oci.MediaTypeOCIIndex},
			} {
				got, err := c.ResolveTag(ctx, "team/app", r.tag)
				if err != nil || got != r.digest.String() {
					t.Errorf("ResolveTag(%s) = %q, %v; want %s", r.tag, got, err, r.digest)
				}
				m, err := c.FetchManifest(ctx, "team/app", r.tag)
				if err != nil {
					t.Fatalf("FetchManifest(%s): %v", r.tag, err)
				}
				if m.MediaType != r.mediaType || m.Digest != r.digest.String() || m.Size != int64(len(m.Body)) {
					t.Errorf("FetchManifest(%s) = %s %s %d, want %s %s", r.tag, m.MediaType, m.Digest, m.Size, r.mediaType, r.digest)
				}
				if err := c.VerifyDigest(ctx, "team/app", r.digest.String()); err != nil {
					t.Errorf("VerifyDigest(%s): %v", r.digest, err)
				}
			}

			// A digest that is not in the repository, an unknown tag, an
			// unknown repository: permanent, with the registry's code.
			missing := digest.FromString("not pushed").String()
			for name, err := range map[string]error{
				"unknown digest": c.VerifyDigest(ctx, "team/app", missing),
				"unknown tag":    second(c.ResolveTag(ctx, "team/app", "nope")),
				"unknown repo":   second(c.ListTags(ctx, "team/nope", connectors.ListOptions{})),
			} {
				if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "404") {
					t.Errorf("%s: %v (class %s), want permanent 404", name, err, fault.ClassOf(err))
				}
			}

			// The catalog pages with n, last and Link in v2.8.
			for _, name := range []string{"alpha", "beta", "gamma/one", "zeta"} {
				p.tag(ctx, name, p.image(ctx, name, false, nil), "latest")
			}
			var pages int
			repos := collect(t, func(o connectors.ListOptions) ([]string, string, error) {
				pages++
				page, err := c.ListRepositories(ctx, o)
				var names []string
				for _, r := range page.Items {
					names = append(names, r.FullName)
				}
				return names, page.Next, err
			})
			if want := []string{"alpha", "beta", "gamma/one", "team/app", "zeta"}; !slices.Equal(repos, want) || pages < 3 {
				t.Errorf("ListRepositories = %q in %d pages, want %q in 3", repos, pages, want)
			}

			res := c.TestConnection(ctx)
			if res.Status != connectors.StatusHealthy || !slices.Equal(ocitest.CheckNames(res), []string{"+ping", "+tags", "+digest"}) {
				t.Errorf("TestConnection = %s %q %v (%s)", res.Status, ocitest.CheckNames(res), res.Message, res.Details)
			}
			if res.Details["tag"] != "extra-0" || res.Details["digest"] != single.Digest.String() {
				t.Errorf("TestConnection details = %v", res.Details)
			}
			health := c.CheckHealth(ctx)
			if health.Status != connectors.StatusHealthy || !slices.Equal(ocitest.CheckNames(health), []string{"+ping", "+digest"}) {
				t.Errorf("CheckHealth = %s %q %s", health.Status, ocitest.CheckNames(health), health.Message)
			}

			if tt.user == "" {
				return
			}
			// Wrong and missing credentials fail the ping, permanently.
			for name, conf := range map[string]map[string]any{
				"wrong password": {"endpoint": reg.URL, "insecure": true, "probeRepository": "team/app", "username": tt.user, "password": "authref://env/WRONG"},
				"no credentials": {"endpoint": reg.URL, "insecure": true, "probeRepository": "team/app"},
			} {
				bad := newConnector(t, conf, secrets{"authref://env/WRONG": "not-the-password"}, nil)
				res := bad.c.TestConnection(ctx)
				if res.Status != connectors.StatusUnhealthy || res.Class != fault.ClassPermanent || !slices.Equal(ocitest.CheckNames(res), []string{"-ping"}) {
					t.Errorf("%s: TestConnection = %s %s %q: %s", name, res.Status, res.Class, ocitest.CheckNames(res), res.Message)
				}
				if _, err := bad.c.ResolveTag(ctx, "team/app", "v1"); fault.ClassOf(err) != fault.ClassPermanent {
					t.Errorf("%s: ResolveTag: %v", name, err)
				}
			}
			// The password reaches no log line and no message.
			if strings.Contains(e.log.String(), tt.password) || strings.Contains(res.Message, tt.password) {
				t.Error("the password appears in the log or the result")
			}
			if !strings.Contains(e.log.String(), `"integrationId":"11111111-1111-1111-1111-111111111111"`) {
				t.Errorf("log lines lack integrationId: %s", e.log.String())
			}
		})
	}
}

// collect pages through a listing two at a time.
func collect(t *testing.T, list func(connectors.ListOptions) ([]string, string, error)) []string {
	t.Helper()
	var all []string
	cursor := ""
	for range 20 {
		items, next, err := list(connectors.ListOptions{Limit: 2, Cursor: cursor})
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		all = append(all, items...)
		if next == "" {
			return all
		}
		cursor = next
	}
	t.Fatal("pagination does not end")
	return nil
}

func second[T any](_ T, err error) error { return err }
