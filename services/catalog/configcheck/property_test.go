package configcheck_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"testing/quick"

	"inthub.dev/schemas"
	"inthub.dev/services/catalog/configcheck"
)

// scenario is a random config of innocent keys and values with, at one
// random leaf, a secret of a random known shape.
type scenario struct {
	config map[string]any
	path   string // the field the secret sits in, as Check names it
}

var (
	innocentKeys   = []string{"name", "description", "region", "project", "labels", "mirror", "owner", "group", "notes", "tags"}
	innocentValues = []string{"prod", "eu-west-1", "acme/platform", "Nightly scan of the API gateway", "v2.3.1", "team-sre", "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f"}
)

func (scenario) Generate(r *rand.Rand, _ int) reflect.Value {
	secrets := []string{ghToken, glToken, awsKey, slackTok, jwt, pem, randKey}
	var build func(depth int, at string, plant bool) (map[string]any, string)
	build = func(depth int, at string, plant bool) (map[string]any, string) {
		obj := map[string]any{}
		n := 1 + r.Intn(4)
		plantAt := r.Intn(n)
		var planted string
		for i := range n {
			k := innocentKeys[r.Intn(len(innocentKeys))]
			for obj[k] != nil {
				k += "x"
			}
			p := schemas.JoinField(at, k)
			here := plant && i == plantAt
			if depth < 3 && r.Intn(3) == 0 {
				child, pl := build(depth+1, p, here)
				obj[k] = child
				if here {
					planted = pl
				}
				continue
			}
			obj[k] = innocentValues[r.Intn(len(innocentValues))]
			if here {
				obj[k] = "see " + secrets[r.Intn(len(secrets))]
				planted = p
			}
		}
		return obj, planted
	}
	cfg, path := build(0, "", true)
	return reflect.ValueOf(scenario{config: cfg, path: "config." + path})
}

// TestPropertyConfigurationManagement is the seed's "configuration
// management" property as this design means it: a config is stored only if
// it holds no secret in clear, wherever the secret hides, and the refusal
// names the field without quoting the secret. The control half checks
// that the same config without the secret passes, so the property cannot
// hold by refusing everything.
func TestPropertyConfigurationManagement(t *testing.T) {
	c := checker(t)
	open := json.RawMessage(`{"type": "object"}`)
	prop := func(s scenario) bool {
		raw, _ := json.Marshal(s.config)
		err := c.Check(context.Background(), "plugin.example", open, raw, "")
		var fes configcheck.FieldErrors
		if !errors.As(err, &fes) || len(fes) != 1 || fes[0].Field != s.path {
			t.Logf("config %s: err = %v, want one error on %s", raw, err, s.path)
			return false
		}
		for _, secret := range []string{ghToken, glToken, awsKey, slackTok, jwt, pem, randKey} {
			if strings.Contains(err.Error(), secret) {
				return false
			}
		}
		clean := strings.NewReplacer("see "+ghToken, "x", "see "+glToken, "x", "see "+awsKey, "x", "see "+slackTok, "x", "see "+jwt, "x", "see "+randKey, "x", q("see " + pem)[1:len(q("see "+pem))-1], "x").Replace(string(raw))
		if err := c.Check(context.Background(), "plugin.example", open, json.RawMessage(clean), ""); err != nil {
			t.Logf("clean config %s: %v", clean, err)
			return false
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 200}); err != nil {
		t.Fatal(err)
	}
}
