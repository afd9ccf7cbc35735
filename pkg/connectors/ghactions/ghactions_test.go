package ghactions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/ghactions"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/fault"
)

const keyRef = "authref://env/GITHUB_APP_KEY"

type secrets map[string][]byte

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	v, ok := s[ref]
	if !ok {
		return nil, fault.Permanentf("no secret at %s", ref)
	}
	return slices.Clone(v), nil
}

func newConnector(t *testing.T, srv *githubtest.Server, key []byte, extra map[string]any) *ghactions.Connector {
	t.Helper()
	conf := map[string]any{
		"endpoint":       srv.Root(),
		"appId":          srv.AppID(),
		"installationId": srv.InstallationID(),
		"privateKey":     keyRef,
		"timeoutSeconds": int(conntest.Timeout / time.Second),
	}
	for k, v := range extra {
		conf[k] = v
	}
	raw, _ := json.Marshal(conf)
	c, err := ghactions.New(connectors.Config{
		IntegrationID: "i-1", TenantID: "t-1", Type: ghactions.Type, Config: raw,
		Secrets: secrets{keyRef: key}, HTTPClient: srv.Client(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type harness struct{ key []byte }

func (h *harness) Capabilities() []string { return []string{conntest.Provisioner} }

func (h *harness) Secrets() []string {
	var out []string
	for _, l := range strings.Split(string(h.key), "\n") {
		if len(l) > 40 {
			out = append(out, l)
		}
	}
	return out
}

func (h *harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	srv := githubtest.New(t, githubtest.Options{Prefix: "/api/v3"})
	key := srv.KeyPEM()
	h.key = key
	switch sc {
	case conntest.BadCredentials:
		key = githubtest.New(t, githubtest.Options{}).KeyPEM()
		h.key = key
	case conntest.Unreachable:
		srv.Close()
	case conntest.Slow:
		srv.Fail(githubtest.RouteAll, githubtest.Slow())
	case conntest.RateLimited:
		srv.Fail(githubtest.RouteAll, githubtest.TooManyRequests(9*time.Second))
	case conntest.ServerError:
		srv.Fail(githubtest.RouteAll, githubtest.ServerError(502))
	}
	return newConnector(t, srv, key, map[string]any{"probeRepository": "acme/api"})
}

func TestConformance(t *testing.T) { conntest.Run(t, &harness{}) }

func checkOf(t *testing.T, r connectors.Result, capability string) connectors.Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Capability == capability {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", capability, r.Checks)
	return connectors.Check{}
}

func TestTestAndHealth(t *testing.T) {
	for _, tt := range []struct {
		name    string
		setup   func(*githubtest.Server)
		extra   map[string]any
		status  connectors.Status
		class   fault.Class
		failing string
		says    string
	}{
		{name: "healthy, probe from the installation", status: connectors.StatusHealthy},
		{name: "healthy, configured probe", extra: map[string]any{"probeRepository": "acme/web"}, status: connectors.StatusHealthy},
		{name: "no actions:read", setup: func(s *githubtest.Server) { s.SetActionsPermission(false) },
			status: connectors.StatusUnhealthy, class: fault.ClassPermanent, failing: ghactions.CheckWorkflows, says: "actions:read"},
		{name: "probe repository not visible", extra: map[string]any{"probeRepository": "acme/nope"},
			status: connectors.StatusUnhealthy, class: fault.ClassPermanent, failing: ghactions.CheckWorkflows, says: "acme/nope was not found"},
		{name: "workflows failing", setup: func(s *githubtest.Server) { s.Fail(githubtest.RouteWorkflows, githubtest.ServerError(503)) },
			status: connectors.StatusUnhealthy, class: fault.ClassTransient, failing: ghactions.CheckWorkflows, says: "503"},
		{name: "app refused", setup: func(s *githubtest.Server) { s.Fail(githubtest.RouteAll, githubtest.Unauthorized()) },
			status: connectors.StatusUnhealthy, class: fault.ClassPermanent, failing: ghactions.CheckWorkflows, says: "not run"},
		{name: "no workflow", setup: func(s *githubtest.Server) { s.SetWorkflows("acme/api", nil, 0) }, status: connectors.StatusHealthy},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := githubtest.New(t, githubtest.Options{})
			if tt.setup != nil {
				tt.setup(srv)
			}
			c := newConnector(t, srv, srv.KeyPEM(), tt.extra)
			for name, call := range map[string]func(context.Context) connectors.Result{"test": c.TestConnection, "health": c.CheckHealth} {
				r := call(t.Context())
				if r.Status != tt.status || r.Class != tt.class {
					t.Errorf("%s: %s/%v, want %s/%v: %s", name, r.Status, r.Class, tt.status, tt.class, r.Message)
					continue
				}
				if tt.failing != "" {
					if ck := checkOf(t, r, tt.failing); ck.OK || !strings.Contains(ck.Message, tt.says) {
						t.Errorf("%s: %s: %q, want %q in it", name, tt.failing, ck.Message, tt.says)
					}
					continue
				}
				if r.Details["probeRepository"] == "" {
					t.Errorf("%s: no probeRepository in %v", name, r.Details)
				}
				if name == "test" {
					for _, cp := range []string{"app", "installation", "repos", "rate_limit", ghactions.CheckWorkflows, ghactions.CheckRuns} {
						if !checkOf(t, r, cp).OK {
							t.Errorf("check %s failed", cp)
						}
					}
				}
			}
		})
	}
}

func TestDiscovery(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	var wfs []githubtest.Workflow
	for i := range 150 {
		wfs = append(wfs, githubtest.Workflow{ID: int64(9000 + i), Name: fmt.Sprintf("wf-%03d", i), Path: fmt.Sprintf(".github/workflows/wf-%03d.yml", i), State: "active"})
	}
	srv.SetWorkflows("acme/api", wfs, 1)
	c := newConnector(t, srv, srv.KeyPEM(), nil)

	for _, tt := range []struct {
		limit, pages int
	}{{0, 5}, {100, 2}, {500, 2}, {40, 4}} {
		t.Run(fmt.Sprint("limit ", tt.limit), func(t *testing.T) {
			var names []string
			cursor, pages := "", 0
			for {
				p, err := c.ListWorkflows(t.Context(), "acme/api", connectors.ListOptions{Limit: tt.limit, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(p.Items) > 100 {
					t.Fatalf("a page of %d", len(p.Items))
				}
				for _, w := range p.Items {
					names = append(names, w.Name)
				}
				if p.Next == "" || pages > 10 {
					break
				}
				cursor = p.Next
			}
			if len(names) != 150 || names[0] != "wf-000" || names[149] != "wf-149" || pages != tt.pages {
				t.Errorf("%d workflows in %d pages (first %q), want 150 in %d", len(names), pages, names[0], tt.pages)
			}
		})
	}

	t.Run("runs", func(t *testing.T) {
		p, err := c.ListRuns(t.Context(), "acme/api", connectors.ListOptions{Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Items) != 2 || p.Next != "2" || !p.Items[0].CreatedAt.After(p.Items[1].CreatedAt) {
			t.Fatalf("runs %+v next %q, want the two newest and a next page", p.Items, p.Next)
		}
		r := p.Items[0]
		if r.Status != "completed" || r.Conclusion == "" || len(r.HeadSHA) != 40 || r.WorkflowID == 0 || r.URL == "" {
			t.Errorf("run %+v", r)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tt := range []struct {
			repo   string
			o      connectors.ListOptions
			says   string
			before func()
		}{
			{repo: "acme/../x", says: "owner/name"},
			{repo: "acme/api", o: connectors.ListOptions{Cursor: "zz"}, says: "cursor"},
			{repo: "acme/api", o: connectors.ListOptions{Limit: -1}, says: "negative"},
			{repo: "acme/api", says: "actions:read", before: func() { srv.SetActionsPermission(false) }},
		} {
			if tt.before != nil {
				tt.before()
			}
			_, err := c.ListWorkflows(t.Context(), tt.repo, tt.o)
			if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("ListWorkflows(%q, %+v) = %v, want permanent saying %q", tt.repo, tt.o, err, tt.says)
			}
		}
	})
}

func TestOrganization(t *testing.T) {
	srv := githubtest.New(t, githubtest.Options{})
	c := newConnector(t, srv, srv.KeyPEM(), map[string]any{"organization": "acme"})
	if _, err := c.ListRuns(t.Context(), "other/lib", connectors.ListOptions{}); err == nil || !strings.Contains(err.Error(), "organisation acme") {
		t.Errorf("ListRuns outside the organisation: %v", err)
	}
	if srv.Requests(githubtest.RouteWorkflowRuns) != 0 {
		t.Error("the request was sent")
	}
}

func TestConfig(t *testing.T) {
	for _, tt := range []struct{ conf, says string }{
		{`{"appId":1,"installationId":2,"privateKey":"authref://env/K","webhookSecret":"authref://env/W"}`, "unknown field"},
		{`{"appId":1,"installationId":2,"privateKey":"authref://env/K","probeRepository":"nope"}`, "probeRepository"},
		{`{"appId":0,"installationId":2,"privateKey":"authref://env/K"}`, "appId"},
		{`{"appId":1,"installationId":2,"privateKey":"-----BEGIN RSA PRIVATE KEY-----"}`, "privateKey"},
	} {
		c, err := ghactions.New(connectors.Config{Type: ghactions.Type, Config: json.RawMessage(tt.conf)})
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tt.says) || fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("%s: %v, want a permanent error saying %q", tt.conf, err, tt.says)
		}
		if err != nil && strings.Contains(err.Error(), "BEGIN RSA") {
			t.Errorf("the error quotes the key: %v", err)
		}
	}
	info, ok := connectors.Default().Lookup(ghactions.Type)
	if !ok || info.Provider != ghactions.Provider || len(info.ConfigSchema) == 0 {
		t.Errorf("Lookup = %+v, %v", info, ok)
	}
}
