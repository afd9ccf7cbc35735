package bitbucket

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/bitbucket/bitbuckettest"
	"inthub.dev/pkg/fault"
)

const (
	appPassword = "ATBBs3cr3tAppPassw0rd0000"
	cloudToken  = "ATCTT3xFfGN0cl0udAccessT0ken11"
	dcPassword  = "dc-Passw0rd-s3cret"
	dcToken     = "BBDC-NjU0MzIxOkhUVFBBY2Nlc3NUb2tlbg"

	passwordRef = "authref://env/BITBUCKET_PASSWORD"
	tokenRef    = "authref://env/BITBUCKET_TOKEN"

	workspace  = "acme"
	projectKey = "ACME"
	botUser    = "inthub-bot"
)

// secretMap resolves AuthRefs from a map and counts resolutions.
type secretMap struct {
	mu    sync.Mutex
	m     map[string]string
	calls int
}

func (s *secretMap) Resolve(_ context.Context, ref string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	v, ok := s.m[ref]
	if !ok {
		return nil, fault.Permanentf("authref: %s: not found", ref)
	}
	return []byte(v + "\n"), nil // as read from a file
}

func testClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// flavour is one way of reaching a fake: a flavour and an auth kind.
type flavour struct {
	name   string
	flavor string
	bearer bool
}

var flavours = []flavour{
	{"cloud/app-password", Cloud, false},
	{"cloud/access-token", Cloud, true},
	{"datacenter/password", DataCenter, false},
	{"datacenter/http-token", DataCenter, true},
}

// owner is the workspace or project key of a flavour's fake.
func (f flavour) owner() string {
	if f.flavor == Cloud {
		return workspace
	}
	return projectKey
}

// seeded is a fake of f's flavour with the bot's credentials, three
// repositories (api with branches and tags, web, and ops), and pull
// request 7 on api; head is a commit of api.
func seeded(t testing.TB, f flavour, o ...bitbuckettest.Options) *bitbuckettest.Server {
	t.Helper()
	var opt bitbuckettest.Options
	if len(o) > 0 {
		opt = o[0]
	}
	opt.Flavor = f.flavor
	s := bitbuckettest.New(t, opt)
	s.AddUser(bitbuckettest.User{Name: botUser, Password: map[bool]string{true: appPassword, false: dcPassword}[f.flavor == Cloud]})
	if f.flavor == Cloud {
		s.AddToken(cloudToken, bitbuckettest.Token{Name: botUser + "-token", Workspace: workspace})
	} else {
		s.AddToken(dcToken, bitbuckettest.Token{Name: botUser + "-token", Projects: []string{projectKey}})
	}
	owner := f.owner()
	s.AddRepo(bitbuckettest.Repo{Owner: owner, Slug: "api", Private: true,
		Branches:     map[string]string{"main": bitbuckettest.SHA("main"), "release-1": bitbuckettest.SHA("r1"), "develop": bitbuckettest.SHA("dev")},
		Tags:         map[string]string{"v1.0.0": bitbuckettest.SHA("v1"), "v1.1.0": bitbuckettest.SHA("v1.1")},
		Commits:      []string{head},
		PullRequests: []int{prID}})
	s.AddRepo(bitbuckettest.Repo{Owner: owner, Slug: "web"})
	s.AddRepo(bitbuckettest.Repo{Owner: owner, Slug: "ops"})
	s.AddRepo(bitbuckettest.Repo{Owner: "other", Slug: "elsewhere"})
	return s
}

var head = bitbuckettest.SHA("head")

const prID = 7

type opts struct {
	conf    map[string]any
	secrets *secretMap
	authRef string
}

func defaultSecrets() *secretMap {
	return &secretMap{m: map[string]string{}}
}

// newConn builds a connector of f against s, with f's credential.
func newConn(t testing.TB, s *bitbuckettest.Server, f flavour, o opts) *Connector {
	t.Helper()
	conf := map[string]any{"flavor": f.flavor}
	if s != nil {
		conf["endpoint"] = s.URL()
	}
	secrets := o.secrets
	if secrets == nil {
		secrets = defaultSecrets()
	}
	if f.flavor == Cloud {
		conf["workspace"] = workspace
	} else {
		conf["projectKey"] = projectKey
	}
	if f.bearer {
		conf["token"] = tokenRef
		if _, ok := secrets.m[tokenRef]; !ok {
			secrets.m[tokenRef] = map[bool]string{true: cloudToken, false: dcToken}[f.flavor == Cloud]
		}
	} else {
		conf["username"], conf["password"] = botUser, passwordRef
		if _, ok := secrets.m[passwordRef]; !ok {
			secrets.m[passwordRef] = map[bool]string{true: appPassword, false: dcPassword}[f.flavor == Cloud]
		}
	}
	for k, v := range o.conf {
		if v == nil {
			delete(conf, k)
		} else {
			conf[k] = v
		}
	}
	raw, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(connectors.Config{
		IntegrationID: "int-1", TenantID: "ten-1", Type: Type,
		Config: raw, AuthRef: o.authRef, Secrets: secrets, HTTPClient: testClient(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return c.(*Connector)
}

func checkNames(r connectors.Result) []string {
	var out []string
	for _, c := range r.Checks {
		out = append(out, fmt.Sprintf("%s:%v", c.Capability, c.OK))
	}
	return out
}
