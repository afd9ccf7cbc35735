package doctor_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/github/githubtest"
	"inthub.dev/pkg/connectors/gitlab"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
	"inthub.dev/pkg/doctor"
	"inthub.dev/pkg/fault"
)

// secrets resolves AuthRefs from a map.
type secrets map[string]string

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	v, ok := s[ref]
	if !ok {
		return nil, fault.Permanentf("no secret at %s", ref)
	}
	return []byte(v), nil
}

const gitlabToken = "glpat-Sup3rS3cretValue0123456789"

func gitlabTarget(t *testing.T, f *gitlabtest.Server) doctor.Target {
	t.Helper()
	raw, _ := json.Marshal(map[string]any{"endpoint": f.URL(), "token": "authref://env/GITLAB_TOKEN"})
	return doctor.Target{
		IntegrationID: "i-gl", Type: gitlab.Type, Endpoint: f.URL() + "/api/v4",
		Connect: func(context.Context) (connectors.Connector, error) {
			return gitlab.New(connectors.Config{IntegrationID: "i-gl", Type: gitlab.Type, Config: raw,
				Secrets: secrets{"authref://env/GITLAB_TOKEN": gitlabToken}, HTTPClient: f.Client()})
		},
	}
}

// TestGitLabScopes: a token with read_api only authenticates and reads,
// and the doctor fails its authorization with the missing scope and the
// commands to check it; a token with api passes. Neither the report nor
// the evidence holds the token.
func TestGitLabScopes(t *testing.T) {
	for _, tc := range []struct {
		scopes []string
		want   doctor.Status
	}{
		{[]string{"read_api", "read_user"}, doctor.StatusFail},
		{[]string{"api"}, doctor.StatusPass},
	} {
		t.Run(strings.Join(tc.scopes, ","), func(t *testing.T) {
			f := gitlabtest.New(t, gitlabtest.Options{})
			f.AddToken(gitlabToken, gitlabtest.Token{User: "bot", Scopes: tc.scopes, Member: []string{"acme/api"}})
			f.AddProject(gitlabtest.Project{ID: 1, Path: "acme/api", Visibility: "private", Branches: []string{"main"}})
			d := doctor.New(doctor.Options{Probes: 2})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, ev := d.Run(ctx, gitlabTarget(t, f))

			if c := checkNamed(t, rep, doctor.CheckAuthentication); c.Status != doctor.StatusPass {
				t.Errorf("authentication = %+v", c)
			}
			c := checkNamed(t, rep, doctor.CheckAuthorization)
			if c.Status != tc.want {
				t.Fatalf("authorization = %+v, want %s", c, tc.want)
			}
			if tc.want == doctor.StatusFail {
				if !strings.Contains(c.Message, "lacks api") || c.HowToFix == nil || len(c.Suggestions) == 0 {
					t.Errorf("authorization = %+v", c)
				}
				want := `curl --silent --header "PRIVATE-TOKEN: $GITLAB_TOKEN" ` + f.URL() + `/api/v4/personal_access_tokens/self`
				if c.HowToFix == nil || !slices.Contains(c.HowToFix.Commands, want) {
					t.Errorf("how_to_fix = %+v, want %q among the commands", c.HowToFix, want)
				}
				if rep.OverallStatus != doctor.Unhealthy {
					t.Errorf("overall %s", rep.OverallStatus)
				}
			}
			if v := checkNamed(t, rep, doctor.CheckVersion); v.Status != doctor.StatusPass {
				t.Errorf("version = %+v", v)
			}
			if rl := checkNamed(t, rep, doctor.CheckRateLimit); rl.Status != doctor.StatusPass {
				t.Errorf("rate_limit = %+v", rl)
			}
			if l := checkNamed(t, rep, doctor.CheckLatency); l.Status != doctor.StatusPass || l.Details["probes"] != 2 {
				t.Errorf("latency = %+v", l)
			}
			b, _ := json.Marshal(rep)
			if strings.Contains(string(b), gitlabToken) || strings.Contains(string(ev.Bytes()), gitlabToken) {
				t.Errorf("the token leaked:\n%s\n%s", b, ev.Bytes())
			}
			if !strings.Contains(string(b), `"how_to_fix"`) && tc.want == doctor.StatusFail {
				t.Errorf("the JSON report has no how_to_fix: %s", b)
			}
		})
	}
}

// TestGitLabRateLimitLow: a budget with 5 % left warns.
func TestGitLabRateLimitLow(t *testing.T) {
	f := gitlabtest.New(t, gitlabtest.Options{RateLimit: 200})
	f.AddToken(gitlabToken, gitlabtest.Token{User: "bot", Scopes: []string{"api"}})
	d := doctor.New(doctor.Options{Probes: 3})
	// 200 a minute: the run's own calls (about 12) leave > 10 %; spend
	// most of the budget first.
	tgt := gitlabTarget(t, f)
	conn, err := tgt.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range 88 { // two calls each: 24 of 200 left, about 6 after the run
		conn.CheckHealth(context.Background())
	}
	rep, _ := d.Run(context.Background(), tgt)
	c := checkNamed(t, rep, doctor.CheckRateLimit)
	if c.Status != doctor.StatusWarn || !strings.Contains(c.Message, "headroom") {
		t.Errorf("rate_limit = %+v", c)
	}
}

// TestGitHubPermissions: the installation token's permissions include
// every one the integration needs; the API version is the one GitHub
// says it served.
func TestGitHubPermissions(t *testing.T) {
	f := githubtest.New(t, githubtest.Options{})
	raw, _ := json.Marshal(map[string]any{"endpoint": f.Root(), "appId": f.AppID(), "installationId": f.InstallationID(),
		"privateKey": "authref://env/KEY"})
	tgt := doctor.Target{IntegrationID: "i-gh", Type: github.Type, Endpoint: f.APIRoot(),
		Connect: func(context.Context) (connectors.Connector, error) {
			return github.New(connectors.Config{IntegrationID: "i-gh", Type: github.Type, Config: raw,
				Secrets: secrets{"authref://env/KEY": string(f.KeyPEM())}, HTTPClient: f.Client()})
		}}
	d := doctor.New(doctor.Options{Dial: f.DialContext, Probes: 2})
	rep, ev := d.Run(context.Background(), tgt)
	c := checkNamed(t, rep, doctor.CheckAuthorization)
	if c.Status != doctor.StatusPass || !slices.Equal(c.Details["required"].([]string), []string{"checks:write", "pull_requests:write", "statuses:write"}) {
		t.Errorf("authorization = %+v", c)
	}
	if v := checkNamed(t, rep, doctor.CheckVersion); v.Status != doctor.StatusPass || v.Details["version"] != "2022-11-28" {
		t.Errorf("version = %+v", v)
	}
	if a := checkNamed(t, rep, doctor.CheckAuthentication); a.Status != doctor.StatusPass {
		t.Errorf("authentication = %+v", a)
	}
	// The fake's certificate is its own authority, unknown to the system.
	if tl := checkNamed(t, rep, doctor.CheckTLS); tl.Status != doctor.StatusFail || !strings.Contains(tl.Message, "unknown authority") {
		t.Errorf("tls = %+v", tl)
	}
	if strings.Contains(string(ev.Bytes()), "ghs_") || strings.Contains(string(ev.Bytes()), "PRIVATE KEY") {
		t.Errorf("a credential leaked into the evidence:\n%s", ev.Bytes())
	}
	if len(f.Violations()) > 0 {
		t.Errorf("requests outside the API: %v", f.Violations())
	}
}
