-- The enrichment service's correlation index, in its own schema.
--
-- Tenant isolation is enforced here, as in the catalog (DESIGN §6, §10):
-- ENABLE and FORCE ROW LEVEL SECURITY, the tenant read from a
-- transaction-local setting (set_config('app.tenant_id', $1, true)), the
-- service connected as inthub_enrichment (owns nothing, NOBYPASSRLS).
-- Retention runs through enrichment.purge, a SECURITY DEFINER function
-- owned by the role that ran this migration, whose own policy lets it
-- delete every tenant's expired rows and nothing else is granted to it.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inthub_enrichment') THEN
    CREATE ROLE inthub_enrichment LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
  END IF;
EXCEPTION
  -- Roles are cluster-wide: another database migrating at the same moment
  -- may have created it between the check and the CREATE.
  WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE FUNCTION enrichment.app_tenant() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

-- One row per canonical event. keys are the event's correlation hints as
-- "key=value" (value lowercased), hint_types the matching "key=value=type"
-- so scoring can tell a resource id from metadata without decoding hints.
CREATE TABLE enrichment.events (
  tenant_id          uuid NOT NULL,
  event_id           uuid NOT NULL,
  category           text NOT NULL CHECK (category IN ('delivery', 'system', 'security')),
  kind               text NOT NULL,
  provider           text NOT NULL,
  summary            text NOT NULL,
  source_integration uuid NOT NULL,
  occurred_at        timestamptz NOT NULL,
  keys               text[] NOT NULL,
  hints              jsonb NOT NULL CHECK (jsonb_typeof(hints) = 'array'),
  links              jsonb NOT NULL CHECK (jsonb_typeof(links) = 'array'),
  indexed_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX events_by_time ON enrichment.events (tenant_id, occurred_at);
CREATE INDEX events_by_key ON enrichment.events USING gin (keys);
CREATE INDEX events_by_age ON enrichment.events (indexed_at);

ALTER TABLE enrichment.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE enrichment.events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON enrichment.events TO inthub_enrichment
  USING (tenant_id = enrichment.app_tenant()) WITH CHECK (tenant_id = enrichment.app_tenant());
DO $$
BEGIN
  -- FORCE applies to the owner too: its one policy is for retention.
  EXECUTE format('CREATE POLICY retention ON enrichment.events TO %I USING (true)', current_user);
END
$$;

-- purge deletes up to max_rows rows indexed before "before" and returns how
-- many it deleted; callers repeat until it returns less than max_rows, so
-- no single statement holds locks for long.
CREATE FUNCTION enrichment.purge(before timestamptz, max_rows integer) RETURNS bigint
  LANGUAGE sql SECURITY DEFINER SET search_path = enrichment, pg_temp
  AS $$
    WITH gone AS (
      DELETE FROM enrichment.events
      WHERE ctid IN (SELECT ctid FROM enrichment.events WHERE indexed_at < before LIMIT max_rows)
      RETURNING 1)
    SELECT count(*) FROM gone
  $$;
REVOKE ALL ON FUNCTION enrichment.purge(timestamptz, integer) FROM PUBLIC;

GRANT USAGE ON SCHEMA enrichment TO inthub_enrichment;
GRANT EXECUTE ON FUNCTION enrichment.app_tenant() TO inthub_enrichment;
GRANT EXECUTE ON FUNCTION enrichment.purge(timestamptz, integer) TO inthub_enrichment;
GRANT SELECT, INSERT ON enrichment.events TO inthub_enrichment;
