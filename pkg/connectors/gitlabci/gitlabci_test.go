package gitlabci_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
	"inthub.dev/pkg/connectors/gitlabci"
	"inthub.dev/pkg/fault"
)

const (
	patValue = "glpat-CiS3cretT0ken000000"
	roValue  = "glpat-ReadUserOnly0000000"
	jobValue = "glcbt-64_CiJ0bT0kenS3cret1"
	patRef   = "authref://env/GITLAB_TOKEN"
	jobRef   = "authref://env/CI_JOB_TOKEN"
)

type secrets map[string]string

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	v, ok := s[ref]
	if !ok {
		return nil, fault.Permanentf("no secret at %s", ref)
	}
	return []byte(v), nil
}

// seeded is a fake GitLab with two projects: acme/api (id 1) with 130
// pipelines and a .gitlab-ci.yml, acme/web (id 2) with none of either; an
// access token of a member of both, and a job token of acme/web's job.
func seeded(t *testing.T) *gitlabtest.Server {
	f := gitlabtest.New(t, gitlabtest.Options{})
	f.AddProject(gitlabtest.Project{ID: 1, Path: "acme/api", Branches: []string{"main"}})
	f.AddProject(gitlabtest.Project{ID: 2, Path: "acme/web", Branches: []string{"main"}})
	f.AddToken(patValue, gitlabtest.Token{User: "ci-bot", Scopes: []string{"read_api"}, Member: []string{"acme/api", "acme/web"}})
	f.AddToken(roValue, gitlabtest.Token{User: "ro", Scopes: []string{"read_user"}, Member: []string{"acme/api"}})
	f.AddJobToken(jobValue, gitlabtest.JobToken{JobID: 77, ProjectID: 2})
	base := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var ps []gitlabtest.Pipeline
	for i := range 130 {
		ps = append(ps, gitlabtest.Pipeline{Ref: "main", SHA: gitlabtest.SHA(fmt.Sprint(i)), Status: []string{"success", "failed"}[i%2],
			CreatedAt: base.Add(time.Duration(i) * time.Minute)})
	}
	f.AddPipelines("acme/api", ps...)
	f.AddFile("acme/api", ".gitlab-ci.yml", []byte("test:\n  script: make test\n"))
	return f
}

func newConn(t *testing.T, endpoint string, conf map[string]any) *gitlabci.Connector {
	t.Helper()
	c := map[string]any{"endpoint": endpoint, "timeoutSeconds": int(conntest.Timeout / time.Second)}
	for k, v := range conf {
		c[k] = v
	}
	raw, _ := json.Marshal(c)
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(hc.CloseIdleConnections)
	conn, err := gitlabci.New(connectors.Config{IntegrationID: "i-1", TenantID: "t-1", Type: gitlabci.Type, Config: raw,
		Secrets: secrets{patRef: patValue, jobRef: jobValue}, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// harness runs the suite with an access token, or with a CI job token
// (whose job has ended in the bad-credentials scenario).
type harness struct{ job bool }

func (harness) Capabilities() []string { return nil }
func (harness) Secrets() []string      { return []string{patValue, jobValue} }

func (h harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	f := seeded(t)
	endpoint := f.URL()
	conf := map[string]any{"token": patRef, "project": "acme/api"}
	if h.job {
		conf = map[string]any{"jobToken": jobRef}
	}
	switch sc {
	case conntest.BadCredentials:
		f.Revoke(patValue)
		f.Revoke(jobValue)
	case conntest.Unreachable:
		closed := httptest.NewServer(http.NotFoundHandler())
		closed.Close()
		endpoint = closed.URL
	case conntest.Slow:
		f.Fail(gitlabtest.RouteAll, gitlabtest.Fault{Slow: true})
	case conntest.RateLimited:
		f.Fail(gitlabtest.RouteAll, gitlabtest.TooManyRequests(17*time.Second))
	case conntest.ServerError:
		f.Fail(gitlabtest.RouteAll, gitlabtest.ServerError(502))
	}
	return newConn(t, endpoint, conf)
}

func TestConformance(t *testing.T) {
	t.Run("token", func(t *testing.T) { conntest.Run(t, harness{}) })
	t.Run("job token", func(t *testing.T) { conntest.Run(t, harness{job: true}) })
}

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
		conf    map[string]any
		setup   func(*gitlabtest.Server)
		status  connectors.Status
		class   fault.Class
		check   string // a check to look at
		says    string
		details map[string]string
	}{
		{name: "token, configured project", conf: map[string]any{"token": patRef, "project": "acme/api"}, status: connectors.StatusHealthy,
			check: gitlabci.CheckCIConfig, says: ".gitlab-ci.yml on main", details: map[string]string{"project": "acme/api", "ciConfig": "true"}},
		{name: "token, first project", conf: map[string]any{"token": patRef}, status: connectors.StatusHealthy,
			check: gitlabci.CheckPipelines, says: "latest pipeline of acme/api", details: map[string]string{"project": "acme/api"}},
		{name: "project without pipelines or config", conf: map[string]any{"token": patRef, "project": "acme/web"}, status: connectors.StatusHealthy,
			check: gitlabci.CheckCIConfig, says: "no .gitlab-ci.yml", details: map[string]string{"ciConfig": "false"}},
		{name: "job token, its project", conf: map[string]any{"jobToken": jobRef}, status: connectors.StatusHealthy,
			check: gitlabci.CheckCIConfig, says: "not checked", details: map[string]string{"project": "2"}},
		{name: "job token, another project by id", conf: map[string]any{"jobToken": jobRef, "project": "1"}, status: connectors.StatusUnhealthy,
			class: fault.ClassPermanent, check: gitlabci.CheckPipelines, says: "its own job's project only (project 2), not those of 1"},
		{name: "job token, another project by path", conf: map[string]any{"jobToken": jobRef, "project": "acme/api"}, status: connectors.StatusUnhealthy,
			class: fault.ClassPermanent, check: gitlabci.CheckPipelines, says: "use an access token with read_api"},
		{name: "project not found", conf: map[string]any{"token": patRef, "project": "acme/nope"}, status: connectors.StatusUnhealthy,
			class: fault.ClassPermanent, check: gitlabci.CheckPipelines, says: "404"},
		{name: "pipelines failing", conf: map[string]any{"token": patRef, "project": "acme/api"},
			setup:  func(f *gitlabtest.Server) { f.Fail(gitlabtest.RoutePipelines, gitlabtest.ServerError(503)) },
			status: connectors.StatusUnhealthy, class: fault.ClassTransient, check: gitlabci.CheckPipelines, says: "503"},
		{name: "revoked token", conf: map[string]any{"token": patRef}, setup: func(f *gitlabtest.Server) { f.Revoke(patValue) },
			status: connectors.StatusUnhealthy, class: fault.ClassPermanent, check: gitlabci.CheckPipelines, says: "not run"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := seeded(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			c := newConn(t, f.URL(), tt.conf)
			for name, call := range map[string]func(context.Context) connectors.Result{"test": c.TestConnection, "health": c.CheckHealth} {
				r := call(t.Context())
				if r.Status != tt.status || r.Class != tt.class {
					t.Errorf("%s: %s/%v, want %s/%v: %s", name, r.Status, r.Class, tt.status, tt.class, r.Message)
					continue
				}
				if name == "health" && tt.check == gitlabci.CheckCIConfig {
					continue // not a health check
				}
				if ck := checkOf(t, r, tt.check); !strings.Contains(ck.Message, tt.says) {
					t.Errorf("%s: %s: %q, want %q in it", name, tt.check, ck.Message, tt.says)
				}
				for k, v := range tt.details {
					if k == "ciConfig" && name == "health" {
						continue
					}
					if r.Details[k] != v {
						t.Errorf("%s: details[%s] = %q, want %q", name, k, r.Details[k], v)
					}
				}
			}
		})
	}
	t.Run("health reads one pipeline", func(t *testing.T) {
		f := seeded(t)
		c := newConn(t, f.URL(), map[string]any{"token": patRef, "project": "acme/api"})
		if r := c.CheckHealth(t.Context()); r.Status != connectors.StatusHealthy {
			t.Fatal(r.Message)
		}
		var saw bool
		for _, req := range f.Seen() {
			if req.Route == gitlabtest.RoutePipelines {
				saw = true
				if !strings.Contains(req.URI, "per_page=1") || !strings.Contains(req.URI, "/projects/acme%2Fapi/") {
					t.Errorf("pipelines request %s", req.URI)
				}
			}
		}
		if !saw {
			t.Error("no pipelines request")
		}
	})
}

func TestListPipelines(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f.URL(), map[string]any{"token": patRef})
	for _, tt := range []struct{ limit, pages int }{{0, 7}, {100, 2}, {1000, 2}, {50, 3}} {
		t.Run(fmt.Sprint("limit ", tt.limit), func(t *testing.T) {
			var ids []int64
			cursor, pages := "", 0
			for {
				p, err := c.ListPipelines(t.Context(), "acme/api", connectors.ListOptions{Limit: tt.limit, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				pages++
				if len(p.Items) > 100 {
					t.Fatalf("a page of %d", len(p.Items))
				}
				for _, pl := range p.Items {
					ids = append(ids, pl.ID)
				}
				if p.Next == "" || pages > 20 {
					break
				}
				cursor = p.Next
			}
			if len(ids) != 130 || pages != tt.pages || ids[0] < ids[129] {
				t.Errorf("%d pipelines in %d pages, want 130 in %d, newest first", len(ids), pages, tt.pages)
			}
		})
	}
	t.Run("numeric id", func(t *testing.T) {
		p, err := c.ListPipelines(t.Context(), "1", connectors.ListOptions{Limit: 1})
		if err != nil || len(p.Items) != 1 || p.Items[0].ProjectID != 1 || p.Items[0].Status != "failed" || p.Items[0].URL == "" {
			t.Fatalf("%+v, %v", p, err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		ro := newConn(t, f.URL(), map[string]any{"token": patRef})
		for _, tt := range []struct {
			c       *gitlabci.Connector
			project string
			o       connectors.ListOptions
			says    string
		}{
			{c, "acme/../x", connectors.ListOptions{}, "segment"},
			{c, "acme/api", connectors.ListOptions{Cursor: "page=0"}, "cursor"},
			{c, "acme/api", connectors.ListOptions{Cursor: "https://evil.example/x"}, "cursor"},
			{ro, "acme/other", connectors.ListOptions{}, "404"},
		} {
			_, err := tt.c.ListPipelines(t.Context(), tt.project, tt.o)
			if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("ListPipelines(%q, %+v) = %v, want permanent saying %q", tt.project, tt.o, err, tt.says)
			}
		}
	})
	t.Run("scope", func(t *testing.T) {
		hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		t.Cleanup(hc.CloseIdleConnections)
		raw, _ := json.Marshal(map[string]any{"endpoint": f.URL(), "token": patRef})
		ro, _ := gitlabci.New(connectors.Config{Type: gitlabci.Type, Config: raw, Secrets: secrets{patRef: roValue}, HTTPClient: hc})
		_, err := ro.ListPipelines(t.Context(), "acme/api", connectors.ListOptions{})
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "read_api") {
			t.Errorf("a token without read_api: %v", err)
		}
	})
}

func TestCIConfig(t *testing.T) {
	f := seeded(t)
	c := newConn(t, f.URL(), map[string]any{"token": patRef})
	cc, err := c.CIConfigOf(t.Context(), "acme/api")
	if err != nil || !cc.Present || cc.Ref != "main" || cc.Size == 0 {
		t.Errorf("acme/api: %+v, %v", cc, err)
	}
	cc, err = c.CIConfigOf(t.Context(), "acme/web")
	if err != nil || cc.Present {
		t.Errorf("acme/web: %+v, %v", cc, err)
	}
	j := newConn(t, f.URL(), map[string]any{"jobToken": jobRef})
	if _, err := j.CIConfigOf(t.Context(), "2"); fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "job token cannot read") {
		t.Errorf("job token: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, tt := range []struct{ conf, says string }{
		{`{"token":"authref://env/T","group":"acme"}`, "unknown field"},
		{`{"token":"authref://env/T","project":"nope"}`, "project"},
		{`{"token":"authref://env/T","jobToken":"authref://env/J"}`, "alternatives"},
		{`{"token":"glpat-inclear0000"}`, "AuthRef"},
		{`{}`, "set token"},
	} {
		c, err := gitlabci.New(connectors.Config{Type: gitlabci.Type, Config: json.RawMessage(tt.conf)})
		if err == nil {
			err = c.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tt.says) || fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("%s: %v, want a permanent error saying %q", tt.conf, err, tt.says)
		}
		if err != nil && strings.Contains(err.Error(), "glpat-inclear") {
			t.Errorf("the error quotes the token: %v", err)
		}
	}
	info, ok := connectors.Default().Lookup(gitlabci.Type)
	if !ok || info.Provider != gitlabci.Provider || len(info.ConfigSchema) == 0 {
		t.Errorf("Lookup = %+v, %v", info, ok)
	}
}
