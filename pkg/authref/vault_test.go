package authref_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/fault"
)

const (
	rootToken = "hvs.rootTokenSecret0001"
	roleID    = "role-id-6f1c"
	secretID  = "secret-id-SECRET-9a7e"
	ghToken   = "ghs_vaultSecretValue123"
	ghKey     = "-----BEGIN RSA PRIVATE KEY-----\nMIIvaultKeySecret\n-----END RSA PRIVATE KEY-----\n"
)

// vaultSecrets are all the secret values the fake holds or hands out; the
// leak checks search for each.
var vaultSecrets = []string{rootToken, secretID, ghToken, "MIIvaultKeySecret", "hvs.approle-"}

// fakeVault is a KV v2 server with AppRole login that enforces what Vault
// does: a known, unexpired X-Vault-Token on every read (403 otherwise), the
// namespace header when one is configured, 404 for paths it does not
// hold, the KV v2 response shape. Its error bodies echo the token it was
// sent, as a careless proxy might, to prove the client never quotes them.
type fakeVault struct {
	*httptest.Server
	t       testing.TB
	mounts  map[string]bool
	secrets map[string]map[string]any // "<mount>/<path>" → data
	fail    atomic.Int32              // when set, reads answer this status

	mu       sync.Mutex
	cfg      fakeCfg
	tokens   map[string]time.Time // token → expiry (zero: never)
	nextTok  int
	reads    int
	logins   int
	requests int
	wake     chan struct{}
}

func newFakeVault(t testing.TB) *fakeVault {
	t.Helper()
	fv := &fakeVault{
		t:      t,
		cfg:    fakeCfg{now: time.Now, lease: time.Hour},
		mounts: map[string]bool{"secret": true, "kv": true},
		secrets: map[string]map[string]any{
			"secret/inthub/github": {"token": ghToken, "privateKey": ghKey, "appId": 12345, "empty": ""},
			"secret/data/odd":      {"token": ghToken},
			"kv/deleted":           nil,
		},
		tokens: map[string]time.Time{rootToken: {}},
		wake:   make(chan struct{}, 1000),
	}
	fv.Server = httptest.NewServer(http.HandlerFunc(fv.serve))
	t.Cleanup(fv.Close)
	return fv
}

// fakeCfg is what a test may change while the fake serves.
type fakeCfg struct {
	now       func() time.Time
	namespace string
	// lease is what a login announces; expireAfter, when set, is how long
	// the token really lives (a lease cut short, a revocation).
	lease, expireAfter time.Duration
	block              chan struct{} // when set, reads wait for it to close
}

func (fv *fakeVault) configure(f func(*fakeCfg)) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	f(&fv.cfg)
}

func (fv *fakeVault) config() fakeCfg {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return fv.cfg
}

func (fv *fakeVault) tokenConfig() authref.VaultConfig {
	return authref.VaultConfig{Address: fv.URL, Token: rootToken}
}

func (fv *fakeVault) appRoleConfig() authref.VaultConfig {
	return authref.VaultConfig{Address: fv.URL, AppRole: &authref.AppRole{RoleID: roleID, SecretID: secretID}}
}

func (fv *fakeVault) counts() (reads, logins int) {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return fv.reads, fv.logins
}

// revokeAll revokes every token, as a Vault restore or a revoke-prefix does.
func (fv *fakeVault) revokeAll() {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	clear(fv.tokens)
}

// waitRequests waits until the fake has received n read requests.
func (fv *fakeVault) waitRequests(t testing.TB, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		fv.mu.Lock()
		got := fv.requests
		fv.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-fv.wake:
		case <-deadline:
			t.Fatalf("the fake vault received %d requests, want %d", got, n)
		}
	}
}

func vaultErr(w http.ResponseWriter, code int, msgs ...string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if msgs == nil {
		msgs = []string{}
	}
	json.NewEncoder(w).Encode(map[string]any{"errors": msgs})
}

func (fv *fakeVault) serve(w http.ResponseWriter, r *http.Request) {
	cfg := fv.config()
	if cfg.namespace != "" && r.Header.Get("X-Vault-Namespace") != cfg.namespace {
		vaultErr(w, http.StatusForbidden, "permission denied (namespace)")
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/auth/") {
		fv.login(w, r, cfg)
		return
	}
	fv.mu.Lock()
	fv.requests++
	fv.mu.Unlock()
	select {
	case fv.wake <- struct{}{}:
	default:
	}
	if cfg.block != nil {
		select {
		case <-cfg.block:
		case <-r.Context().Done():
			return
		}
	}
	if r.Method != http.MethodGet {
		vaultErr(w, http.StatusMethodNotAllowed)
		return
	}
	tok := r.Header.Get("X-Vault-Token")
	fv.mu.Lock()
	exp, known := fv.tokens[tok]
	valid := known && (exp.IsZero() || cfg.now().Before(exp))
	fv.reads++
	fv.mu.Unlock()
	if !valid {
		vaultErr(w, http.StatusForbidden, "permission denied for token "+tok)
		return
	}
	if code := fv.fail.Load(); code != 0 {
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "7")
		}
		vaultErr(w, int(code), "failure while handling token "+tok)
		return
	}
	rest, _ := strings.CutPrefix(r.URL.Path, "/v1/")
	mount, p, _ := strings.Cut(rest, "/")
	p, isData := strings.CutPrefix(p, "data/")
	if !fv.mounts[mount] || !isData {
		vaultErr(w, http.StatusNotFound, "no handler for route "+r.URL.Path)
		return
	}
	data, ok := fv.secrets[mount+"/"+p]
	if !ok {
		vaultErr(w, http.StatusNotFound)
		return
	}
	resp := map[string]any{
		"request_id": "e0b7", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": map[string]any{
			"data":     data,
			"metadata": map[string]any{"created_time": "2026-01-01T00:00:00Z", "version": 3, "destroyed": data == nil},
		},
	}
	code := http.StatusOK
	if data == nil {
		code = http.StatusNotFound // KV v2 answers a deleted version with 404 and data: null
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(resp)
}

func (fv *fakeVault) login(w http.ResponseWriter, r *http.Request, cfg fakeCfg) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/auth/approle/login" && r.URL.Path != "/v1/auth/ci-approle/login" {
		vaultErr(w, http.StatusNotFound)
		return
	}
	var body struct {
		RoleID   string `json:"role_id"`
		SecretID string `json:"secret_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		vaultErr(w, http.StatusBadRequest, "invalid request")
		return
	}
	if body.RoleID != roleID || body.SecretID != secretID {
		vaultErr(w, http.StatusBadRequest, "invalid role or secret ID: "+body.SecretID)
		return
	}
	fv.mu.Lock()
	fv.logins++
	fv.nextTok++
	tok := fmt.Sprintf("hvs.approle-%d", fv.nextTok)
	life := cfg.lease
	if cfg.expireAfter > 0 {
		life = cfg.expireAfter
	}
	fv.tokens[tok] = cfg.now().Add(life)
	fv.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"auth": map[string]any{"client_token": tok, "accessor": "acc", "policies": []string{"inthub"},
			"lease_duration": int(cfg.lease / time.Second), "renewable": true},
	})
}

func TestVaultRead(t *testing.T) {
	fv := newFakeVault(t)
	lc := newLeakCheck(t, vaultSecrets...)
	r := authref.NewResolver(authref.WithVault(fv.tokenConfig()), authref.WithTTL(0), authref.WithLogger(lc.logger()))
	t.Cleanup(r.Close)
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		ref    string
		want   string
		class  fault.Class
		errHas string
	}{
		{name: "cli path", ref: "authref://vault/secret/inthub/github#token", want: ghToken},
		{name: "api path", ref: "authref://vault/secret/data/inthub/github#token", want: ghToken},
		{name: "multi-line field", ref: "authref://vault/secret/inthub/github#privateKey", want: ghKey},
		{name: "number field as JSON", ref: "authref://vault/secret/inthub/github#appId", want: "12345"},
		{name: "secret named data", ref: "authref://vault/secret/data/data/odd#token", want: ghToken},
		{name: "unknown path", ref: "authref://vault/secret/inthub/gitlab#token", class: fault.ClassPermanent, errHas: "404"},
		{name: "unknown mount", ref: "authref://vault/nomount/x#token", class: fault.ClassPermanent, errHas: "no such secret"},
		{name: "missing field", ref: "authref://vault/secret/inthub/github#password", class: fault.ClassPermanent, errHas: `no field "password"`},
		{name: "empty field", ref: "authref://vault/secret/inthub/github#empty", class: fault.ClassPermanent, errHas: `field "empty" is empty`},
		{name: "deleted version", ref: "authref://vault/kv/deleted#token", class: fault.ClassPermanent, errHas: "404"},
		{name: "mount only", ref: "authref://vault/secret#token", class: fault.ClassPermanent, errHas: "<mount>/<path>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Resolve(t.Context(), tt.ref)
			lc.err(err)
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				if string(got) != tt.want {
					t.Fatalf("Resolve returned the wrong value (%d bytes)", len(got))
				}
				return
			}
			if err == nil {
				t.Fatal("Resolve succeeded")
			}
			if !strings.Contains(err.Error(), tt.errHas) || !strings.Contains(err.Error(), tt.ref) {
				t.Errorf("error %q does not say %q and name the reference", err, tt.errHas)
			}
			if c := fault.ClassOf(err); c != tt.class {
				t.Errorf("class %v, want %v", c, tt.class)
			}
		})
	}
}

func TestVaultFailures(t *testing.T) {
	lc := newLeakCheck(t, vaultSecrets...)
	const ref = "authref://vault/secret/inthub/github#token"
	resolve := func(t *testing.T, cfg authref.VaultConfig) error {
		r := authref.NewResolver(authref.WithVault(cfg), authref.WithTTL(0), authref.WithLogger(lc.logger()))
		defer r.Close()
		v, err := r.Resolve(t.Context(), ref)
		if err == nil {
			t.Fatalf("Resolve succeeded (%d bytes)", len(v))
		}
		return lc.err(err)
	}
	for _, tt := range []struct {
		status int
		class  fault.Class
		after  time.Duration
	}{
		{http.StatusInternalServerError, fault.ClassTransient, 0},
		{http.StatusBadGateway, fault.ClassTransient, 0},
		{http.StatusServiceUnavailable, fault.ClassTransient, 0},
		{http.StatusTooManyRequests, fault.ClassTransient, 7 * time.Second},
		{http.StatusBadRequest, fault.ClassPermanent, 0},
	} {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			fv := newFakeVault(t)
			fv.fail.Store(int32(tt.status))
			err := resolve(t, fv.tokenConfig())
			if c := fault.ClassOf(err); c != tt.class {
				t.Errorf("class %v, want %v (%v)", c, tt.class, err)
			}
			if d := fault.RetryAfterOf(err); d != tt.after {
				t.Errorf("retry after %v, want %v", d, tt.after)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(tt.status)) {
				t.Errorf("error %q does not give the status", err)
			}
		})
	}
	t.Run("wrong token", func(t *testing.T) {
		fv := newFakeVault(t)
		cfg := fv.tokenConfig()
		cfg.Token = "hvs.wrongTokenSecret"
		lc.addSecret(cfg.Token)
		err := resolve(t, cfg)
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("error %v (class %v), want a permanent permission denied", err, fault.ClassOf(err))
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		fv := newFakeVault(t)
		cfg := fv.tokenConfig()
		fv.Close()
		err := resolve(t, cfg)
		if fault.ClassOf(err) != fault.ClassTransient || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("error %v (class %v), want a transient unreachable", err, fault.ClassOf(err))
		}
	})
	t.Run("slow server times out", func(t *testing.T) {
		fv := newFakeVault(t)
		block := make(chan struct{})
		defer close(block)
		fv.configure(func(c *fakeCfg) { c.block = block })
		cfg := fv.tokenConfig()
		cfg.Timeout = 100 * time.Millisecond
		err := resolve(t, cfg)
		if fault.ClassOf(err) != fault.ClassTransient || !strings.Contains(err.Error(), "deadline") {
			t.Errorf("error %v (class %v), want a transient deadline", err, fault.ClassOf(err))
		}
	})
	t.Run("redirect to another host", func(t *testing.T) {
		var sawToken atomic.Bool
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sawToken.Store(r.Header.Get("X-Vault-Token") != "")
			vaultErr(w, http.StatusNotFound)
		}))
		defer other.Close()
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
		}))
		defer redirector.Close()
		err := resolve(t, authref.VaultConfig{Address: redirector.URL, Token: rootToken})
		if sawToken.Load() {
			t.Fatal("the token followed a redirect to another host")
		}
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "another host") {
			t.Errorf("error %v (class %v)", err, fault.ClassOf(err))
		}
	})
	t.Run("not configured", func(t *testing.T) {
		r := authref.NewResolver(authref.WithLogger(lc.logger()))
		_, err := r.Resolve(t.Context(), ref)
		lc.err(err)
		if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "no Vault is configured") {
			t.Errorf("error %v", err)
		}
	})
}

func TestVaultNamespace(t *testing.T) {
	fv := newFakeVault(t)
	fv.configure(func(c *fakeCfg) { c.namespace = "tenants/acme" })
	lc := newLeakCheck(t, vaultSecrets...)
	const ref = "authref://vault/secret/inthub/github#token"
	for _, tt := range []struct {
		name, ns string
		ok       bool
	}{{"right namespace", "tenants/acme", true}, {"no namespace", "", false}, {"other namespace", "tenants/evil", false}} {
		t.Run(tt.name, func(t *testing.T) {
			for _, cfg := range []authref.VaultConfig{fv.tokenConfig(), fv.appRoleConfig()} {
				cfg.Namespace = tt.ns
				r := authref.NewResolver(authref.WithVault(cfg), authref.WithLogger(lc.logger()))
				got, err := r.Resolve(t.Context(), ref)
				r.Close()
				lc.err(err)
				if tt.ok && (err != nil || string(got) != ghToken) {
					t.Errorf("%v: Resolve: %v", cfg, err)
				}
				if !tt.ok && fault.ClassOf(err) != fault.ClassPermanent {
					t.Errorf("%v: error %v, want permanent", cfg, err)
				}
			}
		})
	}
}

func TestVaultAppRole(t *testing.T) {
	lc := newLeakCheck(t, vaultSecrets...)
	clock := newClock()
	fv := newFakeVault(t)
	fv.configure(func(c *fakeCfg) { c.now, c.lease = clock.Now, 100*time.Second })
	const ref = "authref://vault/secret/inthub/github#token"
	r := authref.NewResolver(authref.WithVault(fv.appRoleConfig()), authref.WithNow(clock.Now),
		authref.WithTTL(0), authref.WithLogger(lc.logger()))
	t.Cleanup(r.Close)
	expect := func(wantReads, wantLogins int) {
		t.Helper()
		got, err := r.Resolve(t.Context(), ref)
		if lc.err(err) != nil || string(got) != ghToken {
			t.Fatalf("Resolve: %v", err)
		}
		if reads, logins := fv.counts(); reads != wantReads || logins != wantLogins {
			t.Fatalf("%d reads and %d logins, want %d and %d", reads, logins, wantReads, wantLogins)
		}
	}
	expect(1, 1)
	expect(2, 1) // the token is reused
	clock.Advance(79 * time.Second)
	expect(3, 1)
	// Past four fifths of the lease the client logs in again before
	// reading, so it never sends a token about to expire.
	clock.Advance(2 * time.Second)
	expect(4, 2)
	// A token Vault no longer accepts: a 403, one new login, one retry.
	fv.revokeAll()
	expect(6, 3)
	// Purge drops the token too (e.g. after the secret id was rotated).
	r.Purge()
	expect(7, 4)
	// A short lease: the client logs in again after 8s on its own.
	fv.configure(func(c *fakeCfg) { c.lease = 10 * time.Second })
	r.Purge()
	expect(8, 5)
	clock.Advance(9 * time.Second)
	expect(9, 6)
	// A token the client still thinks valid but the server let expire
	// sooner than announced: the 403 path again.
	fv.configure(func(c *fakeCfg) { c.lease, c.expireAfter = 100*time.Second, 10*time.Second })
	r.Purge()
	expect(10, 7)
	clock.Advance(11 * time.Second)
	expect(12, 8)
}

func TestVaultAppRoleConcurrentLogin(t *testing.T) {
	fv := newFakeVault(t)
	r := authref.NewResolver(authref.WithVault(fv.appRoleConfig()), authref.WithTTL(0))
	t.Cleanup(r.Close)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := r.Resolve(t.Context(), "authref://vault/secret/inthub/github#token"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if _, logins := fv.counts(); logins != 1 {
		t.Fatalf("%d logins for 20 concurrent reads, want 1", logins)
	}
}

func TestVaultAppRoleConfig(t *testing.T) {
	lc := newLeakCheck(t, vaultSecrets...)
	fv := newFakeVault(t)
	dir := t.TempDir()
	sidFile := filepath.Join(dir, "secret-id")
	if err := os.WriteFile(sidFile, []byte(secretID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const ref = "authref://vault/secret/inthub/github#token"
	try := func(a authref.AppRole) error {
		r := authref.NewResolver(authref.WithVault(authref.VaultConfig{Address: fv.URL, AppRole: &a}),
			authref.WithLogger(lc.logger()))
		defer r.Close()
		got, err := r.Resolve(t.Context(), ref)
		if err == nil && string(got) != ghToken {
			t.Fatal("wrong value")
		}
		return lc.err(err)
	}
	if err := try(authref.AppRole{RoleID: roleID, SecretIDFile: sidFile}); err != nil {
		t.Errorf("secret id file: %v", err)
	}
	if err := try(authref.AppRole{RoleID: roleID, SecretID: secretID, Mount: "ci-approle"}); err != nil {
		t.Errorf("custom mount: %v", err)
	}
	_, before := fv.counts()
	err := try(authref.AppRole{RoleID: roleID, SecretID: "wrong-secret-id-SECRET"})
	lc.addSecret("wrong-secret-id-SECRET")
	if fault.ClassOf(err) != fault.ClassPermanent || !strings.Contains(err.Error(), "secret id is wrong") {
		t.Errorf("wrong secret id: %v (class %v)", err, fault.ClassOf(err))
	}
	if err := try(authref.AppRole{RoleID: roleID, SecretID: secretID, Mount: "nowhere"}); fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("unknown mount: %v", err)
	}
	if err := try(authref.AppRole{RoleID: roleID, SecretIDFile: filepath.Join(dir, "none")}); fault.ClassOf(err) != fault.ClassPermanent {
		t.Errorf("missing secret id file: %v", err)
	}
	if _, after := fv.counts(); after != before {
		t.Errorf("failed logins counted as logins: %d → %d", before, after)
	}
}

func TestVaultTokenFile(t *testing.T) {
	lc := newLeakCheck(t, vaultSecrets...)
	fv := newFakeVault(t)
	tf := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte("hvs.staleTokenSecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lc.addSecret("hvs.staleTokenSecret")
	r := authref.NewResolver(authref.WithVault(authref.VaultConfig{Address: fv.URL, TokenFile: tf}),
		authref.WithTTL(0), authref.WithLogger(lc.logger()))
	t.Cleanup(r.Close)
	const ref = "authref://vault/secret/inthub/github#token"
	if _, err := r.Resolve(t.Context(), ref); fault.ClassOf(lc.err(err)) != fault.ClassPermanent {
		t.Fatalf("stale token: %v", err)
	}
	// The agent rotates the token in the file; the next read uses it.
	if err := os.WriteFile(tf, []byte(rootToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Resolve(t.Context(), ref); lc.err(err) != nil || string(got) != ghToken {
		t.Fatalf("rotated token: %v", err)
	}
}

func TestVaultConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  authref.VaultConfig
		want string
	}{
		{"no address", authref.VaultConfig{Token: "t"}, "no address"},
		{"not http", authref.VaultConfig{Address: "ftp://vault", Token: "t"}, "http(s)"},
		{"userinfo", authref.VaultConfig{Address: "https://u:p@vault", Token: "t"}, "userinfo"},
		{"no auth", authref.VaultConfig{Address: "https://vault"}, "exactly one"},
		{"two auths", authref.VaultConfig{Address: "https://vault", Token: "t", AppRole: &authref.AppRole{RoleID: "r"}}, "exactly one"},
		{"no role id", authref.VaultConfig{Address: "https://vault", AppRole: &authref.AppRole{}}, "RoleID"},
		{"two secret ids", authref.VaultConfig{Address: "https://vault", AppRole: &authref.AppRole{RoleID: "r", SecretID: "s", SecretIDFile: "/f"}}, "not both"},
		{"bad mount", authref.VaultConfig{Address: "https://vault", AppRole: &authref.AppRole{RoleID: "r", Mount: "../x"}}, "mount"},
		{"bad namespace", authref.VaultConfig{Address: "https://vault", Token: "t", Namespace: "a b"}, "namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := authref.NewResolver(authref.WithVault(tt.cfg))
			err := r.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
			_, rerr := r.Resolve(t.Context(), "authref://vault/secret/x#y")
			if rerr == nil || fault.ClassOf(rerr) != fault.ClassPermanent {
				t.Fatalf("Resolve with a bad config: %v", rerr)
			}
		})
	}
	// Printing a config never shows the token or the secret id.
	cfg := authref.VaultConfig{Address: "https://vault", Token: rootToken}
	ar := authref.VaultConfig{Address: "https://vault", AppRole: &authref.AppRole{RoleID: roleID, SecretID: secretID}}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%+v", ar), fmt.Sprintf("%#v", ar), fmt.Sprintf("%v", *ar.AppRole)} {
		if strings.Contains(s, rootToken) || strings.Contains(s, secretID) {
			t.Errorf("printed config shows a secret: %s", s)
		}
	}
}

// TestSingleflight: 50 concurrent callers of one uncached reference share
// one read of Vault.
func TestSingleflight(t *testing.T) {
	lc := newLeakCheck(t, vaultSecrets...)
	fv := newFakeVault(t)
	block := make(chan struct{})
	fv.configure(func(c *fakeCfg) { c.block = block })
	var h hookLog
	r := authref.NewResolver(authref.WithVault(fv.tokenConfig()), authref.WithHook(h.hook), authref.WithLogger(lc.logger()))
	t.Cleanup(r.Close)
	const n = 50
	var started, wg sync.WaitGroup
	results := make(chan []byte, n)
	started.Add(n)
	for range n {
		wg.Go(func() {
			started.Done()
			v, err := r.Resolve(t.Context(), "authref://vault/secret/inthub/github#token")
			if lc.err(err) != nil {
				t.Error(err)
			}
			results <- v
		})
	}
	started.Wait()
	fv.waitRequests(t, 1)
	close(block)
	wg.Wait()
	close(results)
	var first []byte
	for v := range results {
		if string(v) != ghToken {
			t.Fatalf("a caller got the wrong value (%d bytes)", len(v))
		}
		// Each caller has its own copy.
		if first == nil {
			first = v
		} else if &first[0] == &v[0] {
			t.Fatal("two callers share one slice")
		}
	}
	if reads, _ := fv.counts(); reads != 1 {
		t.Fatalf("%d reads of vault for %d concurrent callers, want 1", reads, n)
	}
	evs := h.all()
	if len(evs) != n {
		t.Fatalf("the hook saw %d resolutions, want %d", len(evs), n)
	}
	var fetched int
	for _, ev := range evs {
		if !ev.Cached && !ev.Shared {
			fetched++
		}
	}
	if fetched != 1 {
		t.Errorf("%d resolutions neither cached nor shared, want 1", fetched)
	}
}

// TestNoSecretLeaks runs every outcome the Resolver has, with one captured
// log at debug level, and searches that log and every error for all the
// secret values.
func TestNoSecretLeaks(t *testing.T) {
	clock := newClock()
	fv := newFakeVault(t)
	fv.configure(func(c *fakeCfg) { c.now, c.lease = clock.Now, 30*time.Second })
	dir := t.TempDir()
	const envSecret, fileSecret = "envSecretLeakProbe-1", "fileSecretLeakProbe-2"
	lc := newLeakCheck(t, append([]string{envSecret, fileSecret, "wrongTokenLeakProbe"}, vaultSecrets...)...)
	h := hookLog{lc: lc}
	t.Setenv("INTHUB_LEAK", envSecret)
	if err := os.WriteFile(filepath.Join(dir, "s"), []byte(fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, authref.MaxFileSize+10), 0o600); err != nil {
		t.Fatal(err)
	}
	resolvers := map[string]*authref.Resolver{}
	for name, cfg := range map[string]authref.VaultConfig{
		"token":      fv.tokenConfig(),
		"approle":    fv.appRoleConfig(),
		"wrongToken": {Address: fv.URL, Token: "wrongTokenLeakProbe"},
		"wrongRole":  {Address: fv.URL, AppRole: &authref.AppRole{RoleID: roleID, SecretID: "wrongTokenLeakProbe"}},
	} {
		resolvers[name] = authref.NewResolver(authref.WithVault(cfg), authref.WithNow(clock.Now),
			authref.WithHook(h.hook), authref.WithLogger(lc.logger()))
		t.Cleanup(resolvers[name].Close)
	}
	refs := []string{
		"authref://env/INTHUB_LEAK", "authref://env/INTHUB_LEAK_MISSING", envSecret,
		"authref://file" + dir + "/s", "authref://file" + dir + "/big", "authref://file" + dir + "/missing",
		"authref://vault/secret/inthub/github#token", "authref://vault/secret/inthub/github#privateKey",
		"authref://vault/secret/inthub/github#missing", "authref://vault/secret/nothing#token",
		"authref://vault/kv/deleted#token",
	}
	ctx := context.Background()
	var calls int
	for round := range 3 {
		for _, status := range []int32{0, 500, 429} {
			fv.fail.Store(status)
			for _, r := range resolvers {
				for _, ref := range refs {
					v, err := r.Resolve(ctx, ref)
					lc.err(err)
					calls++
					clear(v)
				}
				r.Purge()
			}
		}
		if round == 1 {
			fv.revokeAll()
		}
		clock.Advance(25 * time.Second)
	}
	if got := len(h.all()); got != calls {
		t.Errorf("the hook saw %d resolutions of %d", got, calls)
	}
	if !strings.Contains(lc.buf.String(), "authref://vault/secret/inthub/github#token") {
		t.Error("the log does not record resolutions: the search would prove nothing")
	}
	if s := lc.find(); s != "" {
		t.Fatal(s)
	}
}
