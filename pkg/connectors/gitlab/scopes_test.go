package gitlab

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/gitlab/gitlabtest"
)

// TestScopes: a token's scopes from personal_access_tokens/self against
// api; read_api is missing api, with the settings page and a command
// that names the token only as $GITLAB_TOKEN; a CI job token and a
// GitLab without the endpoint report no scopes (ErrScopesNotReported).
func TestScopes(t *testing.T) {
	t.Run("read_api lacks api", func(t *testing.T) {
		f := seeded(t) // alice: read_api
		c := newConn(t, f, opts{})
		rep, err := c.Scopes(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rep.Granted, []string{"read_api"}) || !slices.Equal(rep.Missing, []string{"api"}) ||
			rep.APIVersion != "17.5.1-ee" || rep.VersionProblem != "" {
			t.Errorf("report %+v", rep)
		}
		want := `curl --silent --header "PRIVATE-TOKEN: $GITLAB_TOKEN" ` + f.URL() + `/api/v4/personal_access_tokens/self`
		if !slices.Equal(rep.Commands, []string{want}) || len(rep.Suggestions) != 2 ||
			!strings.HasSuffix(rep.Suggestions[1], f.URL()+"/-/user_settings/personal_access_tokens?name=inthub&scopes=api") {
			t.Errorf("commands %q, suggestions %q", rep.Commands, rep.Suggestions)
		}
		if b, _ := json.Marshal(rep); strings.Contains(string(b), patValue) {
			t.Errorf("the report holds the token: %s", b)
		}
	})
	t.Run("api", func(t *testing.T) {
		f := seeded(t)
		tok := alice()
		tok.Scopes = []string{"api", "read_user"}
		f.AddToken(patValue, tok)
		rep, err := newConn(t, f, opts{}).Scopes(t.Context())
		if err != nil || len(rep.Missing) != 0 || !slices.Equal(rep.Granted, []string{"api", "read_user"}) {
			t.Errorf("report %+v, %v", rep, err)
		}
	})
	t.Run("job token", func(t *testing.T) {
		f := seeded(t)
		_, err := newConn(t, f, opts{conf: map[string]any{"token": nil, "jobToken": jobRef}}).Scopes(t.Context())
		if !errors.Is(err, connectors.ErrScopesNotReported) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("before 15.5", func(t *testing.T) {
		f := seeded(t, gitlabtest.Options{NoTokenSelf: true})
		_, err := newConn(t, f, opts{}).Scopes(t.Context())
		if !errors.Is(err, connectors.ErrScopesNotReported) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		f := seeded(t)
		f.Revoke(patValue)
		_, err := newConn(t, f, opts{}).Scopes(t.Context())
		if err == nil || errors.Is(err, connectors.ErrScopesNotReported) || statusOf(err) != 401 {
			t.Errorf("err = %v", err)
		}
	})
}

func TestMajorOf(t *testing.T) {
	for v, want := range map[string]int{"16.11.2-ee": 16, "14.0.0": 14, "9": 9} {
		if got, ok := majorOf(v); !ok || got != want {
			t.Errorf("majorOf(%q) = %d, %v", v, got, ok)
		}
	}
	if _, ok := majorOf("unknown"); ok {
		t.Error("majorOf(unknown) ok")
	}
}
