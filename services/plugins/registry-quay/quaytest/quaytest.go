// Package quaytest is a fake Quay for the registry.quay plugin's tests:
// /health/instance without auth, and the API (/api/v1/...) only with the
// bearer token, 401 otherwise, as Quay answers a missing or unknown
// token. Hang makes the API hold a request until released, so a test can
// kill the plugin process in the middle of a call.
package quaytest

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Server is the fake.
type Server struct {
	*httptest.Server
	Token     string
	Namespace string
	Repos     []string
	// Hang holds API requests until Release (or the client goes away);
	// each held request is announced on Entered.
	Hang    atomic.Bool
	Entered chan struct{}
	// Calls counts API requests that passed auth.
	Calls atomic.Int64

	release chan struct{}
	once    sync.Once
}

// New starts a fake with one namespace and its repositories.
func New(tb testing.TB, token, namespace string, repos ...string) *Server {
	tb.Helper()
	s := &Server{Token: token, Namespace: namespace, Repos: repos, Entered: make(chan struct{}, 16), release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/instance", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"services": map[string]bool{
			"auth": true, "database": true, "redis": true, "storage": true}}, "status_code": 200})
	})
	mux.HandleFunc("GET /api/v1/discovery", s.authed(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"info": map[string]string{"version": "v1", "title": "Quay Frontend"}})
	}))
	mux.HandleFunc("GET /api/v1/repository", s.authed(func(w http.ResponseWriter, r *http.Request) {
		ns := r.URL.Query().Get("namespace")
		if ns == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error_message": "namespace, starred or public required"})
			return
		}
		if ns != s.Namespace {
			writeJSON(w, http.StatusForbidden, map[string]string{"error_message": "Unauthorized"})
			return
		}
		repos := []map[string]any{}
		for _, name := range s.Repos {
			repos = append(repos, map[string]any{"namespace": ns, "name": name, "is_public": false})
		}
		writeJSON(w, http.StatusOK, map[string]any{"repositories": repos})
	}))
	s.Server = httptest.NewServer(mux)
	tb.Cleanup(func() {
		s.Release()
		s.Close()
	})
	return s
}

// Release lets held requests go, and stops holding new ones.
func (s *Server) Release() {
	s.Hang.Store(false)
	s.once.Do(func() { close(s.release) })
}

func (s *Server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(s.Token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="quay"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error_message": "Invalid token"})
			return
		}
		s.Calls.Add(1)
		if s.Hang.Load() {
			s.Entered <- struct{}{}
			select {
			case <-s.release:
			case <-r.Context().Done():
				return
			}
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
