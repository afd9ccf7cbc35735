package httpapi_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/connectors"
	"inthub.dev/pkg/connectors/httpapi"
	"inthub.dev/pkg/fault"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func api(t *testing.T, timeout time.Duration) *httpapi.API {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &httpapi.API{
		Name: "demo", Product: "Demo", NotJSONHint: "check the endpoint",
		Client:  httpapi.GuardRedirects(&http.Client{Transport: tr}, "demo", "Demo"),
		Timeout: timeout, MaxBody: 64, Logger: slog.New(slog.DiscardHandler),
	}
}

func classify(resp *http.Response) error { return connectors.ClassifyHTTP(resp, nil) }

func TestDo(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Token") != "t" || r.Header.Get("Accept") != "application/json" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Seen", "1")
		_, _ = w.Write([]byte(`{"name":"x"}`))
	})
	mux.HandleFunc("/gone", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) })
	mux.HandleFunc("/html", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("<html>login</html>")) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(strings.Repeat(" ", 100))) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://elsewhere.invalid/ok", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer close(release)
	root, _ := url.Parse(srv.URL)

	tests := []struct {
		path   string
		method string
		class  fault.Class // ClassUnknown: success
		words  string
	}{
		{"/ok", http.MethodGet, fault.ClassUnknown, ""},
		{"/gone", http.MethodGet, fault.ClassPermanent, "demo: op: "},
		{"/html", http.MethodGet, fault.ClassPermanent, "the answer is not Demo's JSON"},
		{"/big", http.MethodGet, fault.ClassPermanent, "response larger than 64 bytes"},
		{"/slow", http.MethodGet, fault.ClassTransient, "timeoutSeconds is 0"},
		{"/moved", http.MethodGet, fault.ClassPermanent, "redirects to another host (elsewhere.invalid)"},
		{"/moved", http.MethodPost, fault.ClassPermanent, "answered 302 (a redirect) to a write"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.path, func(t *testing.T) {
			var out struct{ Name string }
			h, err := api(t, 300*time.Millisecond).Do(context.Background(), httpapi.Request{
				Op: "op", Method: tt.method, URL: httpapi.URL(root, nil, strings.TrimPrefix(tt.path, "/")),
				Header: http.Header{"X-Token": {"t"}}, Out: &out, Classify: classify,
			})
			if tt.class == fault.ClassUnknown {
				if err != nil || out.Name != "x" || h.Get("X-Seen") != "1" {
					t.Fatalf("Do = %v, %+v, %v", h, out, err)
				}
				return
			}
			if err == nil || fault.ClassOf(err) != tt.class || !strings.Contains(err.Error(), tt.words) {
				t.Fatalf("Do = %v (class %v), want %v containing %q", err, fault.ClassOf(err), tt.class, tt.words)
			}
			if strings.Contains(err.Error(), "X-Token") || strings.Contains(err.Error(), `"t"`) {
				t.Errorf("the error shows a header: %v", err)
			}
		})
	}
}

func TestURLKeepsSegmentsEscaped(t *testing.T) {
	root, _ := url.Parse("https://gitlab.example/api/v4/")
	u := httpapi.URL(root, url.Values{"per_page": {"1"}}, "projects", "acme/api", "repository")
	if got := u.String(); got != "https://gitlab.example/api/v4/projects/acme%2Fapi/repository?per_page=1" {
		t.Errorf("URL = %s", got)
	}
}

func TestDetailed(t *testing.T) {
	base := fault.Permanent(errors.New("refused"))
	err := error(&httpapi.Detailed[string]{Err: base, Detail: "Demo says: no", Said: "no"})
	wrapped := errors.Join(errors.New("context"), err)
	if httpapi.SaidOf[string](wrapped) != "no" || fault.ClassOf(wrapped) != fault.ClassPermanent || err.Error() != "refused (Demo says: no)" {
		t.Errorf("Detailed: said %q, class %v, %q", httpapi.SaidOf[string](wrapped), fault.ClassOf(wrapped), err.Error())
	}
	if httpapi.SaidOf[string](base) != "" {
		t.Error("SaidOf of an error without words is not empty")
	}
	if httpapi.JoinHint("", "h") != "h" || httpapi.JoinHint("m", "h") != "m; h" {
		t.Error("JoinHint")
	}
}
