package main

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/fault"
	"inthub.dev/services/plugins/registry-quay/quaytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type secrets map[string]string

func (s secrets) Resolve(_ context.Context, ref string) ([]byte, error) {
	if v, ok := s[ref]; ok {
		return []byte(v), nil
	}
	return nil, fault.Permanentf("unknown ref")
}

func conn(t *testing.T, endpoint, namespace, token string) *Connector {
	t.Helper()
	cfg, _ := json.Marshal(Config{Endpoint: endpoint, Namespace: namespace})
	c, err := New(connectors.Config{Type: Type, Config: cfg, AuthRef: "authref://env/QUAY_TOKEN",
		Secrets: secrets{"authref://env/QUAY_TOKEN": token}, HTTPClient: &http.Client{}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestChecks(t *testing.T) {
	q := quaytest.New(t, "good-token", "acme", "api", "web")
	tests := []struct {
		name      string
		namespace string
		token     string
		status    connectors.Status
		class     fault.Class
	}{
		{"healthy", "acme", "good-token", connectors.StatusHealthy, fault.ClassUnknown},
		{"token refused", "acme", "bad-token", connectors.StatusUnhealthy, fault.ClassPermanent},
		{"namespace not allowed", "other", "good-token", connectors.StatusUnhealthy, fault.ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := conn(t, q.URL, tt.namespace, tt.token)
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			res := c.TestConnection(context.Background())
			if res.Status != tt.status || res.Class != tt.class {
				t.Fatalf("result = %+v", res)
			}
		})
	}
	page, err := conn(t, q.URL, "acme", "good-token").ListRepositories(context.Background(), connectors.ListOptions{})
	if err != nil || len(page.Items) != 2 || page.Items[0].FullName != "acme/api" {
		t.Fatalf("repos = %+v, %v", page, err)
	}
}

func TestValidate(t *testing.T) {
	for _, endpoint := range []string{"ftp://quay.io", "https://user:pw@quay.io", "https://quay.io?x=1", ""} {
		if err := conn(t, endpoint, "acme", "t").Validate(); fault.ClassOf(err) != fault.ClassPermanent {
			t.Errorf("%q: Validate = %v", endpoint, err)
		}
	}
	if err := Plugin().Check(); err != nil {
		t.Fatal(err)
	}
}
