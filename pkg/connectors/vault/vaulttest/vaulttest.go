// Package vaulttest is a fake HashiCorp Vault HTTP API for tests of code
// that reads Vault: the vault.hashicorp connector and the resolution of
// authref://vault references. It enforces the rules a real Vault enforces
// and a lenient fake would let slide:
//
//   - every authenticated path needs X-Vault-Token with a token this server
//     knows and that has not expired, else 403 "permission denied";
//   - with Options.Namespace set, authenticated paths and the AppRole login
//     need X-Vault-Namespace naming it (403 otherwise); sys/health and
//     sys/seal-status are unauthenticated and ignore it;
//   - AppRole login (POST /v1/auth/<mount>/login) with the configured role
//     id and secret id issues a token with a lease; a wrong pair is 400;
//   - sys/health answers by the node's state with Vault's codes (200
//     active, 429 standby, 472 DR secondary, 473 performance standby, 501
//     not initialised, 503 sealed; standbyok=true turns a standby's 429
//     into 200); a sealed or uninitialised node answers 503 everywhere
//     else, a DR secondary 400 on everything but sys/health and
//     sys/seal-status, a standby serves requests (forwarded to the active
//     node, as Vault does by default);
//   - KV version 1 mounts read at /v1/<mount>/<path>, version 2 at
//     /v1/<mount>/data/<path> (a deleted current version is 404 with
//     data: null); a path of the wrong form is 404;
//   - sys/mounts needs a token with the mounts capability (the root
//     token, or Token.ReadMounts);
//   - injected faults (Fail) skip sys/health and sys/seal-status as Vault's
//     rate-limit quotas exempt them.
package vaulttest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// State is the node's state, as sys/health reports it.
type State int

const (
	Active State = iota
	Standby
	PerfStandby
	DRSecondary
	Sealed
	NotInitialized
)

// Options configure a fake. Zero values get the defaults noted.
type Options struct {
	// Namespace, when set, is required in X-Vault-Namespace.
	Namespace string
	// RoleID and SecretID are the AppRole credentials ("role-1",
	// "secret-1"); AppRoleMount is where the method lives ("approle").
	RoleID, SecretID string
	AppRoleMount     string
	// Lease is the lifetime of an AppRole token (1h).
	Lease time.Duration
	// Version is what sys/health reports ("1.18.3").
	Version string
	// AppRoleReadMounts gives AppRole tokens read on sys/mounts.
	AppRoleReadMounts bool
}

// RootToken is the token every fake accepts, with every capability.
const RootToken = "hvs.root-token-of-the-fake"

// Token is a token the fake accepts.
type Token struct {
	Policies []string
	// TTL is the token's lifetime from AddToken; zero never expires.
	TTL       time.Duration
	Renewable bool
	// ReadMounts allows GET sys/mounts.
	ReadMounts bool
	// KVPaths, when set, are the only secrets ("<mount>/<path>" prefixes)
	// the token may read; nil allows every one.
	KVPaths []string
}

type token struct {
	Token
	expires time.Time
}

// Fault is an injected answer.
type Fault struct {
	Status     int
	RetryAfter time.Duration
	// Slow never answers: the handler waits until the client gives up.
	Slow bool
}

type mount struct {
	typ     string
	version int
}

// Server is a running fake.
type Server struct {
	*httptest.Server
	opts Options

	mu       sync.Mutex
	state    State
	tokens   map[string]*token
	mounts   map[string]mount
	secrets  map[string]map[string]any // "<mount>/<path>" → data; nil: deleted (v2)
	fault    *Fault
	serial   int
	logins   int
	requests map[string]int
	now      func() time.Time
	done     chan struct{} // closed at Close: slow handlers return
	stop     sync.Once
}

// New starts a fake with the mounts secret/ (KV v2) and legacy/ (KV v1)
// and stops it at the end of the test.
func New(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.RoleID == "" {
		o.RoleID = "role-1"
	}
	if o.SecretID == "" {
		o.SecretID = "secret-1"
	}
	if o.AppRoleMount == "" {
		o.AppRoleMount = "approle"
	}
	if o.Lease == 0 {
		o.Lease = time.Hour
	}
	if o.Version == "" {
		o.Version = "1.18.3"
	}
	s := &Server{
		opts:     o,
		tokens:   map[string]*token{RootToken: {Token: Token{Policies: []string{"root"}, ReadMounts: true}}},
		mounts:   map[string]mount{"secret": {"kv", 2}, "legacy": {"kv", 1}, "pki": {"pki", 0}},
		secrets:  map[string]map[string]any{},
		requests: map[string]int{},
		now:      time.Now,
		done:     make(chan struct{}),
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server; handlers held by a Slow fault return.
func (s *Server) Close() {
	s.stop.Do(func() { close(s.done) })
	s.Server.Close()
}

// Options returns the fake's options with the defaults filled in.
func (s *Server) Options() Options { return s.opts }

// SetState changes the node's state.
func (s *Server) SetState(st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = st
}

// SetNow sets the fake's clock (token expiry).
func (s *Server) SetNow(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// AddToken makes value a valid token.
func (s *Server) AddToken(value string, t Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tk := &token{Token: t}
	if t.TTL > 0 {
		tk.expires = s.now().Add(t.TTL)
	}
	s.tokens[value] = tk
}

// RevokeAll revokes every token but the root token.
func (s *Server) RevokeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.tokens {
		if k != RootToken {
			delete(s.tokens, k)
		}
	}
}

// Mount enables a secrets engine at path: typ "kv" with version 1 or 2,
// or another engine type (version ignored).
func (s *Server) Mount(path, typ string, version int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mounts[strings.Trim(path, "/")] = mount{typ, version}
}

// Put writes a secret's current version.
func (s *Server) Put(mount, path string, data map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets[mount+"/"+path] = data
}

// Delete deletes a KV v2 secret's current version (it reads as 404 with
// data: null) or a KV v1 secret.
func (s *Server) Delete(mount, path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mounts[mount].version == 2 {
		s.secrets[mount+"/"+path] = nil
		return
	}
	delete(s.secrets, mount+"/"+path)
}

// Fail answers every request but sys/health and sys/seal-status with f
// until Clear.
func (s *Server) Fail(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = &f
}

// Clear removes the injected fault.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = nil
}

// Logins counts successful AppRole logins.
func (s *Server) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// Requests counts the requests of a path ("/v1/sys/mounts").
func (s *Server) Requests(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[path]
}

func vaultErr(w http.ResponseWriter, code int, msgs ...string) {
	if msgs == nil {
		msgs = []string{}
	}
	writeJSON(w, code, map[string]any{"errors": msgs})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests[r.URL.Path]++
	state, f := s.state, s.fault
	s.mu.Unlock()

	switch r.URL.Path {
	case "/v1/sys/health":
		s.health(w, r, state)
		return
	case "/v1/sys/seal-status":
		s.sealStatus(w, state)
		return
	}
	if f != nil {
		if f.Slow {
			// Read the body first: until it is read, the server does not
			// notice a client that hangs up.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-s.done:
			}
			return
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(f.RetryAfter/time.Second)))
		}
		vaultErr(w, f.Status, http.StatusText(f.Status))
		return
	}
	switch state {
	case Sealed:
		vaultErr(w, http.StatusServiceUnavailable, "Vault is sealed")
		return
	case NotInitialized:
		vaultErr(w, http.StatusServiceUnavailable, "Vault is not initialized")
		return
	case DRSecondary:
		vaultErr(w, http.StatusBadRequest, "path disabled in replication DR secondary mode")
		return
	}
	if s.opts.Namespace != "" && strings.Trim(r.Header.Get("X-Vault-Namespace"), "/") != strings.Trim(s.opts.Namespace, "/") {
		vaultErr(w, http.StatusForbidden, "permission denied")
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/v1/auth/"+s.opts.AppRoleMount+"/login" {
		s.login(w, r)
		return
	}
	if r.Method != http.MethodGet {
		vaultErr(w, http.StatusMethodNotAllowed)
		return
	}
	tokValue := r.Header.Get("X-Vault-Token")
	s.mu.Lock()
	tk, ok := s.tokens[tokValue]
	valid := ok && (tk.expires.IsZero() || s.now().Before(tk.expires))
	var tcopy token
	if valid {
		tcopy = *tk
	}
	now := s.now()
	s.mu.Unlock()
	if !valid {
		vaultErr(w, http.StatusForbidden, "permission denied")
		return
	}
	switch r.URL.Path {
	case "/v1/auth/token/lookup-self":
		s.lookupSelf(w, tokValue, tcopy, now)
	case "/v1/sys/mounts":
		if !tcopy.ReadMounts {
			vaultErr(w, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
			return
		}
		s.listMounts(w)
	default:
		s.readKV(w, r, tcopy)
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request, st State) {
	code := map[State]int{Active: 200, Standby: 429, PerfStandby: 473, DRSecondary: 472, Sealed: 503, NotInitialized: 501}[st]
	if r.URL.Query().Get("standbyok") == "true" && (st == Standby || st == PerfStandby) {
		code = 200
	}
	writeJSON(w, code, map[string]any{
		"initialized":                  st != NotInitialized,
		"sealed":                       st == Sealed || st == NotInitialized,
		"standby":                      st == Standby || st == PerfStandby,
		"performance_standby":          st == PerfStandby,
		"replication_performance_mode": "disabled",
		"replication_dr_mode":          map[bool]string{true: "secondary", false: "disabled"}[st == DRSecondary],
		"server_time_utc":              time.Now().Unix(),
		"version":                      s.opts.Version,
		"cluster_name":                 "vault-cluster-fake",
		"cluster_id":                   "5b2c1b4e-0000-4000-8000-000000000001",
	})
}

func (s *Server) sealStatus(w http.ResponseWriter, st State) {
	writeJSON(w, http.StatusOK, map[string]any{
		"type": "shamir", "initialized": st != NotInitialized, "sealed": st == Sealed || st == NotInitialized,
		"t": 3, "n": 5, "progress": 0, "nonce": "", "version": s.opts.Version, "build_date": "2024-12-01T00:00:00Z",
		"migration": false, "cluster_name": "vault-cluster-fake", "recovery_seal": false, "storage_type": "raft",
	})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var body struct {
		RoleID   string `json:"role_id"`
		SecretID string `json:"secret_id"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		vaultErr(w, http.StatusBadRequest, "invalid request")
		return
	}
	if body.RoleID != s.opts.RoleID || body.SecretID != s.opts.SecretID {
		vaultErr(w, http.StatusBadRequest, "invalid role or secret ID")
		return
	}
	s.mu.Lock()
	s.logins++
	s.serial++
	tok := fmt.Sprintf("hvs.approle-%d", s.serial)
	s.tokens[tok] = &token{Token: Token{Policies: []string{"default", "inthub"}, TTL: s.opts.Lease, Renewable: true,
		ReadMounts: s.opts.AppRoleReadMounts},
		expires: s.now().Add(s.opts.Lease)}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"auth": map[string]any{"client_token": tok, "accessor": "acc-" + strconv.Itoa(s.serial),
			"policies": []string{"default", "inthub"}, "token_policies": []string{"default", "inthub"},
			"lease_duration": int(s.opts.Lease / time.Second), "renewable": true},
	})
}

func (s *Server) lookupSelf(w http.ResponseWriter, value string, t token, now time.Time) {
	ttl := 0
	var expire any
	if !t.expires.IsZero() {
		ttl = int(t.expires.Sub(now) / time.Second)
		expire = t.expires.UTC().Format(time.RFC3339Nano)
	}
	policies := slices.Clone(t.Policies)
	writeJSON(w, http.StatusOK, map[string]any{
		"request_id": "lookup", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": map[string]any{
			// Vault returns the token itself as "id": code that logs
			// the answer leaks it.
			"id": value, "accessor": "acc", "display_name": "token", "policies": policies,
			"ttl": ttl, "renewable": t.Renewable, "expire_time": expire, "orphan": false,
			"creation_ttl": ttl, "explicit_max_ttl": 0, "type": "service",
		},
	})
}

func (s *Server) listMounts(w http.ResponseWriter) {
	s.mu.Lock()
	data := map[string]any{
		"sys/":       map[string]any{"type": "system", "description": "system endpoints", "options": nil},
		"cubbyhole/": map[string]any{"type": "cubbyhole", "description": "per-token private secret storage", "options": nil},
		"identity/":  map[string]any{"type": "identity", "description": "identity store", "options": nil},
	}
	for p, m := range s.mounts {
		var opts any
		if m.typ == "kv" {
			opts = map[string]string{"version": strconv.Itoa(m.version)}
		}
		data[p+"/"] = map[string]any{"type": m.typ, "description": "", "options": opts, "local": false, "seal_wrap": false}
	}
	s.mu.Unlock()
	// Vault repeats the table at the top level for old clients.
	out := map[string]any{"request_id": "mounts", "lease_id": "", "renewable": false, "lease_duration": 0, "data": data}
	for k, v := range data {
		out[k] = v
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) readKV(w http.ResponseWriter, r *http.Request, t token) {
	rest, _ := strings.CutPrefix(r.URL.Path, "/v1/")
	s.mu.Lock()
	// Mounts may nest ("team/kv"): the longest mount path that prefixes
	// the request wins, as in Vault's router.
	mountPath, p := "", ""
	for mp := range s.mounts {
		if strings.HasPrefix(rest, mp+"/") && len(mp) > len(mountPath) {
			mountPath, p = mp, strings.TrimPrefix(rest, mp+"/")
		}
	}
	m, ok := s.mounts[mountPath]
	var data map[string]any
	var found bool
	if ok && m.typ == "kv" && m.version == 2 {
		p, ok = strings.CutPrefix(p, "data/")
	}
	if ok {
		data, found = s.secrets[mountPath+"/"+p]
	}
	s.mu.Unlock()
	if !ok || m.typ != "kv" {
		vaultErr(w, http.StatusNotFound, "no handler for route \""+r.URL.Path+"\". route entry not found.")
		return
	}
	if t.KVPaths != nil && !slices.ContainsFunc(t.KVPaths, func(prefix string) bool { return strings.HasPrefix(mountPath+"/"+p, prefix) }) {
		vaultErr(w, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
		return
	}
	if !found || (m.version == 1 && data == nil) {
		vaultErr(w, http.StatusNotFound)
		return
	}
	if m.version == 1 {
		writeJSON(w, http.StatusOK, map[string]any{"request_id": "kv1", "lease_id": "", "renewable": false,
			"lease_duration": 2764800, "data": data})
		return
	}
	meta := map[string]any{"created_time": "2026-01-01T00:00:00Z", "version": 3, "destroyed": false, "deletion_time": ""}
	code := http.StatusOK
	if data == nil {
		// KV v2 answers a deleted current version with 404 and data: null.
		code = http.StatusNotFound
		meta["deletion_time"] = "2026-01-02T00:00:00Z"
	}
	writeJSON(w, code, map[string]any{"request_id": "kv2", "lease_id": "", "renewable": false, "lease_duration": 0,
		"data": map[string]any{"data": data, "metadata": meta}})
}
