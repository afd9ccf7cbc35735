package api

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"inthub.dev/pkg/connectors/connect"
	"inthub.dev/pkg/doctor"
	"inthub.dev/pkg/egress"
	"inthub.dev/services/catalog/store"
)

// withDoctor gives e's server a doctor on its connector builder.
func withDoctor(t *testing.T, e *connectEnv, policy egress.Policy, c DoctorConfig) *DoctorService {
	t.Helper()
	c.Connectors = e.srv.connectors.(*connect.Builder)
	c.Store = e.store
	c.Egress = policy
	d, err := NewDoctor(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.doctor = d
	return d
}

func (e *connectEnv) runDoctor(c caller, id string) (response, DoctorReport) {
	e.t.Helper()
	r := e.do(c, http.MethodPost, "/api/v1/integrations/"+id+"/doctor", nil)
	want(e.t, r, http.StatusOK)
	var out DoctorReport
	r.decode(e.t, &out)
	return r, out
}

func checkOf(t *testing.T, rep DoctorReport, name string) DoctorCheck {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no %s check: %+v", name, rep.Checks)
	return DoctorCheck{}
}

// TestDoctorRoute: a run against PostgreSQL through the API: the report
// matches the document, is stored with its evidence and an audit row,
// listed newest first, invisible to another tenant, and needs
// integrations:write to run (read to list).
func TestDoctorRoute(t *testing.T) {
	t.Setenv("MEM_TOKEN", "mem-token-value-not-for-reports")
	e := newConnectEnv(t, egress.Policy{})
	withDoctor(t, e, egress.Policy{}, DoctorConfig{})
	a, b := e.newCaller(), e.newCaller()
	v := e.validator(t, a)
	const path = "/api/v1/integrations/{id}/doctor"

	ok := e.memIntegration(a, "mem-ok", map[string]any{"healthy": true, "token": "authref://env/MEM_TOKEN"})
	r, rep := e.runDoctor(a, ok.ID)
	v.check(http.MethodPost, path, r)
	if rep.OverallStatus != "healthy" || rep.IntegrationID != ok.ID || rep.RunBy != "user-"+a.tenant[:8] || rep.Evidence == "" {
		t.Fatalf("healthy run: %s", r.Body)
	}
	for name, st := range map[string]string{"connectivity": "skip", "tls": "skip", "authentication": "pass",
		"authorization": "skip", "latency": "pass"} {
		if c := checkOf(t, rep, name); c.Status != st {
			t.Errorf("%s = %+v, want %s", name, c, st)
		}
	}
	if strings.Contains(string(r.Body), "mem-token-value") {
		t.Errorf("the secret is in the report: %s", r.Body)
	}

	bad := e.memIntegration(a, "mem-bad", map[string]any{"failWith": "permanent"})
	r, rep = e.runDoctor(a, bad.ID)
	v.check(http.MethodPost, path, r)
	if auth := checkOf(t, rep, "authentication"); rep.OverallStatus != "unhealthy" || auth.Status != "fail" || len(auth.Suggestions) == 0 {
		t.Errorf("failing run: %s", r.Body)
	}
	_, second := e.runDoctor(a, bad.ID)

	lr := e.do(a, http.MethodGet, "/api/v1/integrations/"+bad.ID+"/doctor?evidence=true", nil)
	want(t, lr, http.StatusOK)
	v.check(http.MethodGet, path, lr)
	var list DoctorReports
	lr.decode(t, &list)
	if len(list.Reports) != 2 || list.Reports[0].RunID != second.RunID || list.Reports[1].RunID != rep.RunID ||
		list.Reports[0].Evidence == "" || list.Reports[0].OverallStatus != "unhealthy" {
		t.Errorf("listing: %s", lr.Body)
	}
	// Each evidence line is JSON and names the run.
	for _, line := range strings.Split(strings.TrimSpace(list.Reports[0].Evidence), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil || l["runId"] != second.RunID {
			t.Errorf("evidence line %q: %v", line, err)
		}
	}
	lr = e.do(a, http.MethodGet, "/api/v1/integrations/"+bad.ID+"/doctor?limit=1", nil)
	list = DoctorReports{}
	lr.decode(t, &list)
	if len(list.Reports) != 1 || list.Reports[0].Evidence != "" || list.Reports[0].RunID != second.RunID {
		t.Errorf("limit=1 without evidence: %s", lr.Body)
	}
	// The first address of the listing answers the same.
	lr = e.do(a, http.MethodGet, "/api/v1/integrations/"+bad.ID+"/doctor/runs?limit=1", nil)
	want(t, lr, http.StatusOK)
	v.check(http.MethodGet, path+"/runs", lr)
	var old DoctorReports
	lr.decode(t, &old)
	if len(old.Reports) != 1 || old.Reports[0].RunID != second.RunID {
		t.Errorf("GET .../doctor/runs: %s", lr.Body)
	}
	// by-type keeps its place beside {id}/doctor in the shared pattern.
	want(t, e.do(a, http.MethodGet, "/api/v1/integrations/by-type/"+typeMem, nil), http.StatusOK)
	var audits int
	if err := e.owner.QueryRow(context.Background(), `SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action = 'integration.doctor'`,
		a.tenant).Scan(&audits); err != nil || audits != 3 {
		t.Errorf("audit rows: %d, %v", audits, err)
	}

	// Tenant isolation, scopes, unknown ids.
	for _, tc := range []struct {
		name   string
		c      caller
		method string
		suffix string
		id     string
		status int
	}{
		{"another tenant runs", b, http.MethodPost, "/doctor", ok.ID, http.StatusNotFound},
		{"another tenant lists", b, http.MethodGet, "/doctor", ok.ID, http.StatusNotFound},
		{"another tenant lists (old address)", b, http.MethodGet, "/doctor/runs", ok.ID, http.StatusNotFound},
		{"missing id", a, http.MethodPost, "/doctor", uuid.NewString(), http.StatusNotFound},
		{"malformed id", a, http.MethodGet, "/doctor", "nope", http.StatusNotFound},
		{"reader runs", e.caller(a.tenant, ScopeRead), http.MethodPost, "/doctor", ok.ID, http.StatusForbidden},
		{"reader lists", e.caller(a.tenant, ScopeRead), http.MethodGet, "/doctor", ok.ID, http.StatusOK},
		{"no token", caller{}, http.MethodPost, "/doctor", ok.ID, http.StatusUnauthorized},
	} {
		r := e.do(tc.c, tc.method, "/api/v1/integrations/"+tc.id+tc.suffix, nil)
		if r.Status != tc.status {
			t.Errorf("%s: %s, want %d", tc.name, r, tc.status)
			continue
		}
		v.check(tc.method, path+strings.TrimPrefix(tc.suffix, "/doctor"), r)
	}
	var n int
	if err := e.store.InTenant(context.Background(), b.tenant, func(tx pgx.Tx) error {
		return tx.QueryRow(context.Background(), `SELECT count(*) FROM doctor_checks`).Scan(&n)
	}); err != nil || n != 0 {
		t.Errorf("another tenant's transaction sees %d runs (%v)", n, err)
	}

	un := e.create(a, map[string]any{"type": typeUnloaded, "name": "plugin", "config": map[string]any{}})
	r = e.do(a, http.MethodPost, "/api/v1/integrations/"+un.ID+"/doctor", nil)
	want(t, r, http.StatusConflict)
	v.check(http.MethodPost, path, r)
}

// TestDoctorEgress: the doctor's own TCP dial obeys the egress policy: a
// loopback endpoint (written past the save-time check, as a name that
// rebinds) fails connectivity with a message that names no address, and
// nothing reaches the server; with loopback allowed it connects.
func TestDoctorEgress(t *testing.T) {
	srv, hits := ociFake(t)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	base := egress.Policy{AllowHTTP: true, AllowPorts: []int{p}}
	loopback := base
	loopback.AllowLoopback = true
	for _, tc := range []struct {
		name   string
		policy egress.Policy
		want   string
	}{
		{"refused", base, "fail"},
		{"allowed", loopback, "pass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newConnectEnv(t, tc.policy)
			withDoctor(t, e, tc.policy, DoctorConfig{})
			c := e.newCaller()
			it, err := e.store.CreateIntegration(context.Background(), c.tenant, "test", store.IntegrationInput{
				Type: typeOCI, Name: "oci-local",
				Config: json.RawMessage(fmt.Sprintf(`{"endpoint":"http://localhost:%s","insecure":true,"timeoutSeconds":5}`, port)),
			})
			if err != nil {
				t.Fatal(err)
			}
			before := hits.Load()
			r, rep := e.runDoctor(c, it.ID)
			conn := checkOf(t, rep, "connectivity")
			if conn.Status != tc.want {
				t.Fatalf("connectivity = %+v: %s", conn, r.Body)
			}
			if tc.want == "pass" {
				if tl := checkOf(t, rep, "tls"); tl.Status != "warn" || !strings.Contains(tl.Message, "plain http") {
					t.Errorf("tls = %+v", tl)
				}
				return
			}
			if !strings.Contains(conn.Message, "egress policy") || hits.Load() != before {
				t.Errorf("connectivity = %+v, %d requests reached the server", conn, hits.Load()-before)
			}
			for _, leak := range []string{"127.0.0.1", "::1"} {
				if strings.Contains(string(r.Body), leak) {
					t.Errorf("the report names the refused address %s: %s", leak, r.Body)
				}
			}
		})
	}
}

// TestDoctorSignedAndPacks: with a signing key each run carries a DSSE
// envelope that verifies with the key's public half and holds the digest
// of the run's evidence; a packs directory with a command off the
// allow-list stops the doctor from starting.
func TestDoctorSignedAndPacks(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	t.Setenv("DOCTOR_KEY", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	e := newConnectEnv(t, egress.Policy{})
	withDoctor(t, e, egress.Policy{}, DoctorConfig{SigningKey: "authref://env/DOCTOR_KEY"})
	c := e.newCaller()
	it := e.memIntegration(c, "mem", map[string]any{"healthy": true})
	r, rep := e.runDoctor(c, it.ID)
	if rep.Signature == nil {
		t.Fatalf("no dsse envelope: %s", r.Body)
	}
	env := &doctor.Envelope{PayloadType: rep.Signature.PayloadType, Payload: rep.Signature.Payload}
	for _, s := range rep.Signature.Signatures {
		env.Signatures = append(env.Signatures, struct {
			KeyID string `json:"keyid"`
			Sig   string `json:"sig"`
		}{s.KeyID, s.Sig})
	}
	sum, err := doctor.VerifySummary(env, pub)
	if err != nil || sum.RunID != rep.RunID || string(sum.OverallStatus) != rep.OverallStatus || sum.DoctorCommand != doctorCommand ||
		len(sum.Checks) != len(rep.Checks) || sum.EvidenceSHA256 == "" {
		t.Fatalf("summary %+v, %v", sum, err)
	}
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := doctor.VerifySummary(env, other); err == nil {
		t.Error("the envelope verifies with another key")
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "evil.yaml"), []byte("name: evil\nchecks:\n  - id: wipe\n    run:\n      exec: [curl, -X, DELETE, \"{{endpoint}}/x\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = NewDoctor(context.Background(), DoctorConfig{Connectors: e.srv.connectors.(*connect.Builder), Store: e.store, PacksDir: dir})
	if err == nil || !strings.Contains(err.Error(), "evil.yaml") || !strings.Contains(err.Error(), "-X is not allowed") {
		t.Errorf("NewDoctor with a refused pack: %v", err)
	}
}
