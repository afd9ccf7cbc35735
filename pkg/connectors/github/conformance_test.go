package github_test

import (
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/conntest"
	"inthub.dev/pkg/connectors/github"
	"inthub.dev/pkg/connectors/github/githubtest"
)

// harness maps the suite's scenarios onto the fake GitHub (on GHES, so
// the suite also runs through the /api/v3 root).
type harness struct {
	key []byte // the healthy app's key, whose text must appear nowhere
}

func (h *harness) Capabilities() []string {
	return []string{conntest.Discoverer, conntest.Provisioner}
}

func (h *harness) Secrets() []string { return pemSecrets(h.key) }

func (h *harness) New(t *testing.T, sc conntest.Scenario) connectors.Connector {
	srv := githubtest.New(t, githubtest.Options{Prefix: "/api/v3"})
	key := srv.KeyPEM()
	h.key = key
	switch sc {
	case conntest.Healthy:
	case conntest.BadCredentials:
		// The app's key was rotated on GitHub: the one in the store signs
		// JWTs that no longer verify.
		key = githubtest.New(t, githubtest.Options{}).KeyPEM()
		h.key = key
	case conntest.Unreachable:
		srv.Close()
	case conntest.Slow:
		srv.Fail(githubtest.RouteAll, githubtest.Slow())
	case conntest.RateLimited:
		srv.Fail(githubtest.RouteAll, githubtest.SecondaryLimit(17*time.Second))
	case conntest.ServerError:
		srv.Fail(githubtest.RouteAll, githubtest.ServerError(500))
	default:
		t.Fatalf("scenario %s not scripted", sc)
	}
	raw, _ := json.Marshal(map[string]any{
		"endpoint":       srv.Root(),
		"appId":          srv.AppID(),
		"installationId": srv.InstallationID(),
		"privateKey":     keyRef,
		"timeoutSeconds": int(conntest.Timeout / time.Second),
	})
	c, err := connectors.Default().New(connectors.Config{
		IntegrationID: "7f9c1b5e-0000-4000-8000-000000000002",
		TenantID:      "7f9c1b5e-0000-4000-8000-0000000000aa",
		Type:          github.Type,
		Config:        raw,
		Secrets:       &secretStore{m: map[string][]byte{keyRef: key}},
		HTTPClient:    srv.Client(),
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformance(t *testing.T) { conntest.Run(t, &harness{}) }
