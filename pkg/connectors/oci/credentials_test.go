package oci_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/oci"
	"inthub.dev/pkg/connectors/oci/ocitest"
	"inthub.dev/pkg/fault"
)

// minter is a provider's token cache: it mints a password, returns it
// until dropped, and remembers which are still good at the registry.
type minter struct {
	mu     sync.Mutex
	good   map[string]bool
	cached string
	calls  atomic.Int32 // Credentials calls
	minted atomic.Int32
	fail   error // returned instead of a token when set
}

func (m *minter) creds(context.Context) (string, string, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return "", "", m.fail
	}
	if m.cached == "" {
		m.cached = fmt.Sprintf("minted-%d", m.minted.Add(1))
		m.good[m.cached] = true
	}
	return "AWS", m.cached, nil
}

func (m *minter) drop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cached = ""
}

func (m *minter) accept(user, pass string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return user == "AWS" && m.good[pass]
}

func (m *minter) revokeAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.good)
}

func newWithCredentials(t *testing.T, f *ocitest.Registry, opts oci.Options, conf oci.Config) *oci.Connector {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	if conf.Endpoint == "" {
		conf.Endpoint = f.URL
	}
	conf.Insecure, conf.ProbeRepository, conf.TimeoutSeconds = true, "team/app", 5
	return oci.NewWithOptions(connectors.Config{Type: "registry.test", HTTPClient: &http.Client{Transport: tr},
		Logger: slog.New(slog.DiscardHandler)}, conf, opts)
}

// TestCredentialsHook: a provider's Credentials func supplies the
// password, in both auth modes; the registry accepts only what it minted;
// errors keep their class; Refused is called on a 401.
func TestCredentialsHook(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []ocitest.Mode{ocitest.TokenAuth, ocitest.BasicAuth} {
		t.Run(fmt.Sprintf("mode=%d", mode), func(t *testing.T) {
			m := &minter{good: map[string]bool{}}
			f := ocitest.New(t)
			f.Mode = mode
			f.Accept = m.accept
			f.Add("team/app", "v1", oci.MediaTypeOCIManifest, []byte(`{"schemaVersion":2}`))
			var refused atomic.Int32
			opts := oci.Options{Credentials: m.creds, Refused: func() { refused.Add(1); m.drop() }}
			c := newWithCredentials(t, f, opts, oci.Config{})
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			res := c.TestConnection(ctx)
			if !res.OK() || len(res.Checks) != 3 {
				t.Fatalf("TestConnection = %s %q: %s", res.Status, ocitest.CheckNames(res), res.Message)
			}
			if m.calls.Load() == 0 || m.minted.Load() != 1 || refused.Load() != 0 {
				t.Errorf("credentials called %d times, minted %d, refused %d", m.calls.Load(), m.minted.Load(), refused.Load())
			}

			// The cached password is revoked behind the provider's back:
			// 401, a permanent auth failure, and Refused is told; the
			// provider drops its cache and the next call mints anew.
			m.revokeAll()
			_, err := c.ResolveTag(ctx, "team/app", "v1")
			if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "401") || refused.Load() == 0 {
				t.Errorf("ResolveTag after revocation = %v (class %s), refused %d", err, fault.ClassOf(err), refused.Load())
			}
			if _, err := c.ResolveTag(ctx, "team/app", "v1"); err != nil || m.minted.Load() != 2 {
				t.Errorf("ResolveTag after the cache was dropped = %v (minted %d)", err, m.minted.Load())
			}

			for _, tt := range []struct {
				err   error
				class fault.Class
			}{
				{fault.Transient(errors.New("throttled")), fault.ClassTransient},
				{fault.Offline(errors.New("no route")), fault.ClassOffline},
				{fault.Permanent(errors.New("bad key")), fault.ClassPermanent},
				{errors.New("unclassified"), fault.ClassPermanent},
			} {
				m.mu.Lock()
				m.fail = tt.err
				m.mu.Unlock()
				res := c.CheckHealth(ctx)
				if res.Class != tt.class || !strings.Contains(res.Message, "cannot get the registry credentials") || !strings.Contains(res.Message, tt.err.Error()) {
					t.Errorf("CheckHealth with %v = %s %s: %s", tt.err, res.Status, res.Class, res.Message)
				}
				if !errors.Is(res.Err, tt.err) {
					t.Errorf("the hook's error is not in the chain: %v", res.Err)
				}
			}
		})
	}
}

// TestCredentialsHookConfig: with a Credentials func the config must not
// name a user or password.
func TestCredentialsHookConfig(t *testing.T) {
	f := ocitest.New(t)
	c := newWithCredentials(t, f, oci.Options{Credentials: (&minter{good: map[string]bool{}}).creds},
		oci.Config{Username: "u", Password: "authref://env/P"})
	var ce *oci.ConfigError
	if err := c.Validate(); !errors.As(err, &ce) || ce.Field != "username" {
		t.Errorf("Validate = %v", err)
	}
	// The schema-free path: registry.oci still reads its own config.
	raw, _ := json.Marshal(regConfig(f, nil))
	plain, err := oci.New(connectors.Config{Type: oci.Type, Config: raw})
	if err != nil || plain.Validate() != nil {
		t.Errorf("oci.New = %v, %v", err, plain.Validate())
	}
}
