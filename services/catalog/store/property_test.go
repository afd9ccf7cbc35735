package store

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestPropertyTenantIsolation is the "tenant isolation" property of
// seeds/plugin-framework-design.md as this design means it: for random
// sequences of create/update/delete/get/list by three tenants, aimed at
// each other's ids as often as at their own, no operation returns or
// changes another tenant's row, every answer agrees with an in-memory
// model, and each tenant's list equals the model's. After every scenario
// the rows as the owner sees them (past RLS) are compared with the model
// too, which catches a change that no tenant's view would show.
//
// INTHUB_PROPERTY_SEED replays a failing run; the seed is logged.
func TestPropertyTenantIsolation(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("INTHUB_PROPERTY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (INTHUB_PROPERTY_SEED=%d to replay)", seed, seed)
	r := rand.New(rand.NewPCG(seed, 0x1e7a))
	e := newEnv(t)
	const scenarios = 100
	for i := range scenarios {
		if !runIsolationScenario(t, e, r, i) {
			return
		}
	}
}

type modelRow struct {
	tenant, id, name, typ string
	version               int64
	deleted               bool
	createdAt             time.Time
}

type isolationModel struct {
	rows map[string]*modelRow // by id, every tenant
	ids  []string             // ids in creation order, including deleted
}

func (m *isolationModel) live(tenant string) []*modelRow {
	var out []*modelRow
	for _, r := range m.rows {
		if r.tenant == tenant && !r.deleted {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *modelRow) int {
		if c := a.createdAt.Compare(b.createdAt); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	return out
}

func (m *isolationModel) nameTaken(tenant, name, except string) bool {
	for _, r := range m.rows {
		if r.tenant == tenant && !r.deleted && r.name == name && r.id != except {
			return true
		}
	}
	return false
}

// runIsolationScenario reports false after a failure, to stop the run at
// the first failing scenario.
func runIsolationScenario(t *testing.T, e *env, r *rand.Rand, scenario int) bool {
	ctx := ctxT(t)
	tenants := []string{newTenant(), newTenant(), newTenant()}
	names := []string{"prod", "staging", "dev"}
	types := []string{"scm.github", "registry.harbor"}
	m := &isolationModel{rows: map[string]*modelRow{}}
	var log []string
	fail := func(format string, args ...any) bool {
		t.Errorf("scenario %d: %s\nops:\n  %s", scenario, fmt.Sprintf(format, args...), strings.Join(log, "\n  "))
		return false
	}
	pickID := func() string {
		if len(m.ids) == 0 || r.IntN(8) == 0 {
			return uuid.NewString() // nobody's
		}
		return m.ids[r.IntN(len(m.ids))]
	}
	// owned says whether id is a live row of tenant.
	owned := func(tenant, id string) (*modelRow, bool) {
		row, ok := m.rows[id]
		return row, ok && row.tenant == tenant && !row.deleted
	}
	checkRow := func(op string, tenant string, got Integration, want *modelRow) bool {
		if got.TenantID != tenant || got.ID != want.id || got.Name != want.name || got.Type != want.typ || got.Version != want.version {
			return fail("%s returned %+v, model %+v", op, got, *want)
		}
		return true
	}

	ops := 12 + r.IntN(10)
	for range ops {
		tenant := tenants[r.IntN(len(tenants))]
		tn := slices.Index(tenants, tenant)
		switch op := r.IntN(10); {
		case op < 3: // create
			name, typ := names[r.IntN(len(names))], types[r.IntN(len(types))]
			log = append(log, fmt.Sprintf("t%d create %s", tn, name))
			it, err := e.store.CreateIntegration(ctx, tenant, "prop", IntegrationInput{Type: typ, Name: name})
			if m.nameTaken(tenant, name, "") {
				var ce *ConflictError
				if !errors.As(err, &ce) || ce.Field != "name" {
					return fail("create of a taken name: %v", err)
				}
				continue
			}
			if err != nil {
				return fail("create: %v", err)
			}
			row := &modelRow{tenant: tenant, id: it.ID, name: name, typ: typ, version: 1, createdAt: it.CreatedAt}
			if !checkRow("create", tenant, it, row) {
				return false
			}
			m.rows[it.ID] = row
			m.ids = append(m.ids, it.ID)
		case op < 5: // update
			id, name := pickID(), names[r.IntN(len(names))]
			row, ok := owned(tenant, id)
			ifVersion := int64(0)
			if row != nil && r.IntN(2) == 0 {
				ifVersion = row.version - int64(r.IntN(2)) // current or stale
			}
			log = append(log, fmt.Sprintf("t%d update %s name=%s if=%d", tn, id, name, ifVersion))
			it, err := e.store.UpdateIntegration(ctx, tenant, "prop", id, ifVersion, IntegrationInput{Name: name})
			switch {
			case !ok:
				if !errors.Is(err, ErrNotFound) {
					return fail("update of a row not ours: %v (%+v)", err, it)
				}
			case ifVersion != 0 && ifVersion != row.version:
				if !errors.Is(err, ErrVersionMismatch) {
					return fail("stale update: %v", err)
				}
			case m.nameTaken(tenant, name, id):
				if !errors.Is(err, ErrConflict) {
					return fail("update to a taken name: %v", err)
				}
			default:
				if err != nil {
					return fail("update: %v", err)
				}
				row.name, row.version = name, row.version+1
				if !checkRow("update", tenant, it, row) {
					return false
				}
			}
		case op < 6: // delete
			id := pickID()
			row, ok := owned(tenant, id)
			log = append(log, fmt.Sprintf("t%d delete %s", tn, id))
			it, err := e.store.DeleteIntegration(ctx, tenant, "prop", id, 0)
			if !ok {
				if !errors.Is(err, ErrNotFound) {
					return fail("delete of a row not ours: %v (%+v)", err, it)
				}
				continue
			}
			if err != nil {
				return fail("delete: %v", err)
			}
			row.deleted, row.version = true, row.version+1
			if !checkRow("delete", tenant, it, row) {
				return false
			}
		case op < 8: // get
			id := pickID()
			row, ok := owned(tenant, id)
			log = append(log, fmt.Sprintf("t%d get %s", tn, id))
			it, err := e.store.GetIntegration(ctx, tenant, id)
			if !ok {
				if !errors.Is(err, ErrNotFound) {
					return fail("get of a row not ours: %v (%+v)", err, it)
				}
				continue
			}
			if err != nil {
				return fail("get: %v", err)
			}
			if !checkRow("get", tenant, it, row) {
				return false
			}
		default: // list, sometimes filtered, in small pages
			typ := ""
			if r.IntN(3) == 0 {
				typ = types[r.IntN(len(types))]
			}
			log = append(log, fmt.Sprintf("t%d list type=%q", tn, typ))
			var want []string
			for _, row := range m.live(tenant) {
				if typ == "" || row.typ == typ {
					want = append(want, row.id)
				}
			}
			var got []string
			cursor := ""
			for {
				items, next, err := e.store.ListIntegrations(ctx, tenant, ListOptions{Type: typ, Limit: 1 + r.IntN(3), Cursor: cursor})
				if err != nil {
					return fail("list: %v", err)
				}
				for _, it := range items {
					if it.TenantID != tenant {
						return fail("list of t%d returned a row of %s", tn, it.TenantID)
					}
					got = append(got, it.ID)
				}
				if next == "" {
					break
				}
				cursor = next
			}
			if !slices.Equal(got, want) {
				return fail("list = %v, model %v", got, want)
			}
		}
	}

	// Past RLS: the rows of the three tenants are exactly the model's.
	rows, err := e.owner.Query(ctx, `SELECT tenant_id::text, id::text, name, version, deleted_at IS NOT NULL
		FROM integrations WHERE tenant_id = ANY($1::uuid[])`, tenants)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var tenant, id, name string
		var version int64
		var deleted bool
		if err := rows.Scan(&tenant, &id, &name, &version, &deleted); err != nil {
			t.Fatal(err)
		}
		n++
		want, ok := m.rows[id]
		if !ok || want.tenant != tenant || want.name != name || want.version != version || want.deleted != deleted {
			return fail("stored row %s/%s %q v%d deleted=%v, model %+v", tenant, id, name, version, deleted, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(m.rows) {
		return fail("%d stored rows, model has %d", n, len(m.rows))
	}
	return true
}
