package api

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"testing"
	"testing/quick"
	"time"

	"github.com/google/uuid"

	"inthub.dev/events"
)

// TestPropertyTenantIsolationAPI is the plugin framework's "tenant
// isolation" property as this design means it (DESIGN §6, §9): through the
// HTTP API, a tenant never reads, lists, updates or deletes another
// tenant's integrations, health history or connection profiles; another
// tenant's id is answered exactly like a missing one (404); lists never
// show another tenant's rows; and "last used" defaults come from the
// caller's own tenant only.
//
// Each of the 100 generated scenarios is a random sequence of calls by
// three fresh tenants over every endpoint, checked step by step against an
// in-memory model of what each tenant owns, then checked whole at the end.
func TestPropertyTenantIsolationAPI(t *testing.T) {
	e := newEnv(t)
	scenario := func(seed uint64) bool {
		m := newIsoModel(t, e, seed)
		steps := 15 + m.rng.IntN(20)
		for range steps {
			m.step()
			if m.failed {
				return false
			}
		}
		m.verify()
		return !m.failed
	}
	if err := quick.Check(scenario, &quick.Config{MaxCount: 100}); err != nil {
		t.Fatal(err)
	}
}

type isoIntegration struct {
	id, name, typ string
	owner         int
	version       int64
	live          bool
	checks        int
}

type isoProfile struct {
	id, name, typ string
	owner         int
	version       int64
	live          bool
}

type isoTenant struct {
	c      caller
	marker string // in every config this tenant writes
	ints   []*isoIntegration
	profs  []*isoProfile
	n      int
}

type isoModel struct {
	t       *testing.T
	e       *env
	seed    uint64
	rng     *rand.Rand
	tenants []*isoTenant
	ints    []*isoIntegration // every tenant's, including deleted
	profs   []*isoProfile
	failed  bool
	log     []string
}

func newIsoModel(t *testing.T, e *env, seed uint64) *isoModel {
	m := &isoModel{t: t, e: e, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x150))}
	for i := range 3 {
		c := e.newCaller(ScopeRead, ScopeWrite)
		m.tenants = append(m.tenants, &isoTenant{c: c, marker: fmt.Sprintf("t%d-%s", i, c.tenant[:8])})
	}
	return m
}

func (m *isoModel) fail(format string, args ...any) {
	m.t.Helper()
	m.failed = true
	m.t.Errorf("seed %d, after %v: %s", m.seed, m.log, fmt.Sprintf(format, args...))
}

func (m *isoModel) expect(r response, status int, what string) bool {
	m.t.Helper()
	if r.Status != status {
		m.fail("%s: status %d, want %d: %s", what, r.Status, status, r.Body)
		return false
	}
	return true
}

func (m *isoModel) name(tn *isoTenant) string {
	tn.n++
	// Names repeat across tenants on purpose: they are unique per tenant.
	return fmt.Sprintf("n%d", tn.n)
}

func (m *isoModel) body(tn *isoTenant, typ, name string) map[string]any {
	if typ == typeHarbor {
		return withConfig(harborInput(name), map[string]any{"username": "u-" + tn.marker, "project": tn.marker})
	}
	return withConfig(memInput(name), map[string]any{"failWith": "", "latencyMs": len(tn.marker)})
}

func (m *isoModel) randomType() string {
	if m.rng.IntN(2) == 0 {
		return typeMem
	}
	return typeHarbor
}

// pickIntegration returns any integration any tenant ever had, or a made
// up one (owner -1).
func (m *isoModel) pickIntegration() *isoIntegration {
	if len(m.ints) == 0 || m.rng.IntN(8) == 0 {
		return &isoIntegration{id: uuid.NewString(), typ: typeMem, owner: -1}
	}
	return m.ints[m.rng.IntN(len(m.ints))]
}

func (m *isoModel) pickProfile() *isoProfile {
	if len(m.profs) == 0 || m.rng.IntN(8) == 0 {
		return &isoProfile{id: uuid.NewString(), typ: typeMem, owner: -1}
	}
	return m.profs[m.rng.IntN(len(m.profs))]
}

func (m *isoModel) step() {
	m.t.Helper()
	a := m.rng.IntN(len(m.tenants))
	tn := m.tenants[a]
	op := m.rng.IntN(14)
	m.log = append(m.log, fmt.Sprintf("t%d:op%d", a, op))
	switch op {
	case 0, 1: // create an integration
		typ := m.randomType()
		name := m.name(tn)
		r := m.e.do(tn.c, http.MethodPost, "/api/v1/integrations", m.body(tn, typ, name))
		if !m.expect(r, http.StatusCreated, "create") {
			return
		}
		var it Integration
		r.decode(m.t, &it)
		if it.TenantID != tn.c.tenant {
			m.fail("created in tenant %s, caller's is %s", it.TenantID, tn.c.tenant)
		}
		mi := &isoIntegration{id: it.ID, name: name, typ: typ, owner: a, version: 1, live: true}
		m.ints = append(m.ints, mi)
		tn.ints = append(tn.ints, mi)

	case 2: // get
		target := m.pickIntegration()
		r := m.e.do(tn.c, http.MethodGet, "/api/v1/integrations/"+target.id, nil)
		if target.owner == a && target.live {
			if m.expect(r, http.StatusOK, "get own") {
				var it Integration
				r.decode(m.t, &it)
				if it.Name != target.name || it.Version != target.version {
					m.fail("get own: %+v, model %+v", it, *target)
				}
			}
			return
		}
		m.expectNotFound(r, "get another's or a missing integration")

	case 3: // list, paged, maybe filtered
		typ := ""
		if m.rng.IntN(2) == 0 {
			typ = m.randomType()
		}
		path := "/api/v1/integrations"
		if typ != "" {
			path += "?type=" + typ
		}
		m.checkList(tn, path, typ)

	case 4: // by type
		typ := m.randomType()
		m.checkList(tn, "/api/v1/integrations/by-type/"+typ, typ)

	case 5: // update
		target := m.pickIntegration()
		name := m.name(tn)
		var headers []string
		if m.rng.IntN(2) == 0 && target.version > 0 {
			headers = []string{"If-Match", etag(target.version)}
		}
		r := m.e.do(tn.c, http.MethodPut, "/api/v1/integrations/"+target.id, m.body(tn, target.typ, name), headers...)
		if target.owner == a && target.live {
			if m.expect(r, http.StatusOK, "update own") {
				target.version++
				target.name = name
			}
			return
		}
		m.expectNotFound(r, "update another's or a missing integration")

	case 6: // delete
		target := m.pickIntegration()
		r := m.e.do(tn.c, http.MethodDelete, "/api/v1/integrations/"+target.id, nil)
		if target.owner == a && target.live {
			if m.expect(r, http.StatusNoContent, "delete own") {
				target.live = false
			}
			return
		}
		m.expectNotFound(r, "delete another's or a missing integration")

	case 7: // health history
		target := m.pickIntegration()
		r := m.e.do(tn.c, http.MethodGet, "/api/v1/integrations/"+target.id+"/health", nil)
		if target.owner == a && target.live {
			if m.expect(r, http.StatusOK, "health own") {
				var h HealthHistory
				r.decode(m.t, &h)
				if len(h.History) != target.checks || (target.checks > 0) != (h.Latest != nil) {
					m.fail("health own: %d checks, latest %v; model %d", len(h.History), h.Latest, target.checks)
				}
			}
			return
		}
		m.expectNotFound(r, "health of another's or a missing integration")

	case 8: // a health result arrives (the catalog's consumer), claiming tenant a
		target := m.pickIntegration()
		err := m.recordHealth(tn.c.tenant, target)
		if target.owner == a && target.live {
			if err != nil {
				m.fail("record own health: %v", err)
			}
			target.checks++
			return
		}
		if err == nil {
			m.fail("a health result of tenant %d was stored for another tenant's integration", a)
		}

	case 9: // create a profile
		typ := m.randomType()
		name := m.name(tn)
		r := m.e.do(tn.c, http.MethodPost, "/api/v1/connection-profiles", map[string]any{
			"name": name, "integrationType": typ, "isDefault": m.rng.IntN(2) == 0,
			"defaultConfig": m.body(tn, typ, name)["config"]})
		if !m.expect(r, http.StatusCreated, "create profile") {
			return
		}
		var p Profile
		r.decode(m.t, &p)
		mp := &isoProfile{id: p.ID, name: name, typ: typ, owner: a, version: 1, live: true}
		m.profs = append(m.profs, mp)
		tn.profs = append(tn.profs, mp)
		if p.IsDefault {
			// The previous default of the type stops being one: a change.
			for _, o := range tn.profs {
				if o != mp && o.live && o.typ == typ {
					if r := m.e.do(tn.c, http.MethodGet, "/api/v1/connection-profiles/"+o.id, nil); r.Status == http.StatusOK {
						var op Profile
						r.decode(m.t, &op)
						o.version = op.Version
					}
				}
			}
		}

	case 10: // get a profile
		target := m.pickProfile()
		r := m.e.do(tn.c, http.MethodGet, "/api/v1/connection-profiles/"+target.id, nil)
		if target.owner == a && target.live {
			if m.expect(r, http.StatusOK, "get own profile") {
				var p Profile
				r.decode(m.t, &p)
				if p.Name != target.name {
					m.fail("get own profile: %+v, model %+v", p, *target)
				}
			}
			return
		}
		m.expectNotFound(r, "get another's or a missing profile")

	case 11: // list profiles
		m.checkProfiles(tn)

	case 12: // update or delete a profile
		target := m.pickProfile()
		if m.rng.IntN(2) == 0 {
			name := m.name(tn)
			r := m.e.do(tn.c, http.MethodPut, "/api/v1/connection-profiles/"+target.id,
				map[string]any{"name": name, "integrationType": target.typ, "defaultConfig": m.body(tn, target.typ, name)["config"]})
			if target.owner == a && target.live {
				if m.expect(r, http.StatusOK, "update own profile") {
					target.name = name
				}
				return
			}
			m.expectNotFound(r, "update another's or a missing profile")
			return
		}
		r := m.e.do(tn.c, http.MethodDelete, "/api/v1/connection-profiles/"+target.id, nil)
		if target.owner == a && target.live {
			if m.expect(r, http.StatusNoContent, "delete own profile") {
				target.live = false
			}
			return
		}
		m.expectNotFound(r, "delete another's or a missing profile")

	case 13: // last-used defaults
		typ := m.randomType()
		r := m.e.do(tn.c, http.MethodGet, "/api/v1/connection-profiles/defaults?type="+typ, nil)
		if !m.expect(r, http.StatusOK, "defaults") {
			return
		}
		var d struct {
			Config map[string]any `json:"config"`
		}
		r.decode(m.t, &d)
		for _, k := range []string{"username", "project"} {
			if v, ok := d.Config[k]; ok && v != "u-"+tn.marker && v != tn.marker {
				m.fail("defaults of tenant %d hold %s = %v, written by another tenant", a, k, v)
			}
		}
		if lat, ok := d.Config["latencyMs"]; ok && lat != float64(len(tn.marker)) {
			m.fail("defaults of tenant %d hold latencyMs %v", a, lat)
		}
	}
}

func (m *isoModel) expectNotFound(r response, what string) {
	m.t.Helper()
	if !m.expect(r, http.StatusNotFound, what) {
		return
	}
	// The same answer as for an id that never existed: nothing tells
	// another tenant's row from no row.
	var p problemDoc
	r.decode(m.t, &p)
	if p.Detail != "not found" || len(p.Errors) != 1 || p.Errors[0].Location != "path.id" {
		m.fail("%s: a 404 unlike the one for a missing id: %s", what, r.Body)
	}
}

func (m *isoModel) recordHealth(tenant string, target *isoIntegration) error {
	ev, err := events.New(events.SubjectIntegrationHealthChecked, "inthub/health-poller", tenant, events.HealthChecked{
		IntegrationID: target.id, TenantID: tenant, Type: target.typ, Status: events.HealthHealthy,
		LatencyMs: 1, Message: "ok", CheckedAt: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	_, err = m.e.store.RecordHealth(context.Background(), ev)
	return err
}

// checkList pages through path with a small random page size and compares
// the ids with the tenant's live integrations of typ ("" = all), in
// creation order.
func (m *isoModel) checkList(tn *isoTenant, path, typ string) {
	m.t.Helper()
	var want []string
	for _, it := range tn.ints {
		if it.live && (typ == "" || it.typ == typ) {
			want = append(want, it.id)
		}
	}
	got, ok := m.pages(tn, path, func(r response) ([]string, string) {
		var l IntegrationList
		r.decode(m.t, &l)
		ids := make([]string, len(l.Items))
		for i, it := range l.Items {
			ids[i] = it.ID
			if it.TenantID != tn.c.tenant {
				m.fail("list shows tenant %s's integration %s", it.TenantID, it.ID)
			}
		}
		return ids, l.NextCursor
	})
	if ok && !slices.Equal(got, want) {
		m.fail("%s: %v, model %v", path, got, want)
	}
}

func (m *isoModel) checkProfiles(tn *isoTenant) {
	m.t.Helper()
	var want []string
	for _, p := range tn.profs {
		if p.live {
			want = append(want, p.id)
		}
	}
	got, ok := m.pages(tn, "/api/v1/connection-profiles", func(r response) ([]string, string) {
		var l ProfileList
		r.decode(m.t, &l)
		ids := make([]string, len(l.Items))
		for i, p := range l.Items {
			ids[i] = p.ID
			if p.TenantID != tn.c.tenant {
				m.fail("profile list shows tenant %s's profile %s", p.TenantID, p.ID)
			}
		}
		return ids, l.NextCursor
	})
	if ok && !slices.Equal(got, want) {
		m.fail("profiles: %v, model %v", got, want)
	}
}

func (m *isoModel) pages(tn *isoTenant, path string, read func(response) ([]string, string)) ([]string, bool) {
	m.t.Helper()
	limit := 1 + m.rng.IntN(4)
	var all []string
	cursor := ""
	for range 200 {
		p := fmt.Sprintf("%s%slimit=%d", path, sep(path), limit)
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		r := m.e.do(tn.c, http.MethodGet, p, nil)
		if !m.expect(r, http.StatusOK, "list "+p) {
			return nil, false
		}
		ids, next := read(r)
		all = append(all, ids...)
		if next == "" {
			return all, true
		}
		cursor = next
	}
	m.fail("%s: no end after 200 pages", path)
	return nil, false
}

// verify checks the whole state: each tenant's lists are its model, and
// every live row of a tenant is 404 to the two others on every route.
func (m *isoModel) verify() {
	m.t.Helper()
	m.log = append(m.log, "verify")
	for a, tn := range m.tenants {
		m.checkList(tn, "/api/v1/integrations", "")
		m.checkProfiles(tn)
		for _, it := range m.ints {
			if it.owner == a || !it.live {
				continue
			}
			m.expectNotFound(m.e.do(tn.c, http.MethodGet, "/api/v1/integrations/"+it.id, nil), "final get of another's integration")
			m.expectNotFound(m.e.do(tn.c, http.MethodGet, "/api/v1/integrations/"+it.id+"/health", nil), "final health of another's integration")
		}
		for _, p := range m.profs {
			if p.owner == a || !p.live {
				continue
			}
			m.expectNotFound(m.e.do(tn.c, http.MethodGet, "/api/v1/connection-profiles/"+p.id, nil), "final get of another's profile")
		}
	}
	// What the owners see is what the model says: no cross-tenant write
	// changed a row.
	for _, it := range m.ints {
		if !it.live {
			continue
		}
		r := m.e.do(m.tenants[it.owner].c, http.MethodGet, "/api/v1/integrations/"+it.id, nil)
		if m.expect(r, http.StatusOK, "final get own") {
			var got Integration
			r.decode(m.t, &got)
			if got.Name != it.name || got.Version != it.version {
				m.fail("integration %s: %s v%d, model %s v%d", it.id, got.Name, got.Version, it.name, it.version)
			}
		}
	}
}
