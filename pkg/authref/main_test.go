package authref_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"inthub.dev/pkg/authref"
	"inthub.dev/pkg/connectors"
)

// The Resolver is what connectors get as their SecretResolver.
var _ connectors.SecretResolver = (*authref.Resolver)(nil)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer is a bytes.Buffer that a logger may write from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// leakCheck captures a JSON log at debug level and every error a test
// saw, and fails the test at cleanup if any of them contains one of the
// secrets. Every test that resolves something uses one.
type leakCheck struct {
	t       testing.TB
	buf     syncBuffer
	mu      sync.Mutex
	errs    []string
	secrets []string
}

func newLeakCheck(t testing.TB, secrets ...string) *leakCheck {
	t.Helper()
	lc := &leakCheck{t: t, secrets: secrets}
	t.Cleanup(func() {
		t.Helper()
		if s := lc.find(); s != "" {
			t.Errorf("a secret leaked: %s", s)
		}
	})
	return lc
}

func (lc *leakCheck) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(&lc.buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (lc *leakCheck) addSecret(s ...string) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.secrets = append(lc.secrets, s...)
}

// err records err's text (and, through the hook, the errors the hook
// saw) for the leak check, and returns err.
func (lc *leakCheck) err(err error) error {
	if err != nil {
		lc.mu.Lock()
		lc.errs = append(lc.errs, err.Error())
		lc.mu.Unlock()
	}
	return err
}

// find returns a description of the first leak, or "".
func (lc *leakCheck) find() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	log := lc.buf.String()
	for _, s := range lc.secrets {
		forms := []string{s}
		// As the JSON log escapes it (slog leaves <, > and & alone).
		var j bytes.Buffer
		enc := json.NewEncoder(&j)
		enc.SetEscapeHTML(false)
		if enc.Encode(s) == nil {
			forms = append(forms, strings.TrimSuffix(strings.TrimSpace(j.String()), `"`)[1:])
		}
		for _, f := range forms {
			if strings.Contains(log, f) {
				return "the log contains a secret"
			}
			for _, e := range lc.errs {
				if strings.Contains(e, f) {
					return "an error contains a secret: " + e
				}
			}
		}
	}
	return ""
}

// hookLog records every resolution the hook is told of.
type hookLog struct {
	mu  sync.Mutex
	evs []authref.Resolution
	lc  *leakCheck
}

func (h *hookLog) hook(_ context.Context, ev authref.Resolution) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.evs = append(h.evs, ev)
	if h.lc != nil {
		h.lc.err(ev.Err)
	}
}

func (h *hookLog) all() []authref.Resolution {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]authref.Resolution(nil), h.evs...)
}

func (h *hookLog) last(t testing.TB) authref.Resolution {
	t.Helper()
	evs := h.all()
	if len(evs) == 0 {
		t.Fatal("the hook saw no resolution")
	}
	return evs[len(evs)-1]
}
