-- inthub catalog schema.
--
-- Tenant isolation is enforced here, not only in queries (DESIGN §6, §10):
-- every tenant table has ENABLE and FORCE ROW LEVEL SECURITY, one policy per
-- role, reading the tenant from a transaction-local setting:
--
--   SELECT set_config('app.tenant_id', $1, true)
--
-- NULLIF(..., '') because after a transaction the setting reads '' rather
-- than NULL; an unset tenant matches no row.
--
-- Roles: migrations run as the owner of the tables. The catalog's requests
-- run as inthub_app (owns nothing, NOBYPASSRLS). The outbox forwarder reads
-- every tenant's events as inthub_forwarder, which can touch nothing else.

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inthub_app') THEN
    CREATE ROLE inthub_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'inthub_forwarder') THEN
    CREATE ROLE inthub_forwarder LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOINHERIT;
  END IF;
END
$$;

CREATE FUNCTION app_tenant() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

-- Global tables: what the installation offers, the same for every tenant.

CREATE TABLE integration_types (
  id            text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*$'),
  display_name  text NOT NULL,
  description   text NOT NULL DEFAULT '',
  provider      text NOT NULL,
  config_schema jsonb NOT NULL,
  capabilities  text[] NOT NULL DEFAULT '{}',
  builtin       boolean NOT NULL DEFAULT true,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plugin_metadata (
  plugin_id     text PRIMARY KEY,
  type          text NOT NULL,
  version       text NOT NULL,
  capabilities  text[] NOT NULL DEFAULT '{}',
  path          text NOT NULL DEFAULT '',
  checksum      text NOT NULL DEFAULT '',
  discovered_at timestamptz NOT NULL DEFAULT now()
);

-- Tenant tables. Keys and unique constraints start with tenant_id: a global
-- unique would tell one tenant that another's value exists (23505).

CREATE TABLE integrations (
  tenant_id         uuid NOT NULL,
  id                uuid NOT NULL DEFAULT gen_random_uuid(),
  type              text NOT NULL REFERENCES integration_types (id),
  name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  config            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
  auth_ref          text CHECK (auth_ref IS NULL OR auth_ref ~ '^authref://(env|file|vault)/'),
  status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'offline')),
  health_status     text NOT NULL DEFAULT 'unknown' CHECK (health_status IN ('healthy', 'degraded', 'unhealthy', 'unknown')),
  last_health_check timestamptz,
  version           bigint NOT NULL DEFAULT 1 CHECK (version >= 1),
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  deleted_at        timestamptz,
  created_by        text NOT NULL,
  PRIMARY KEY (tenant_id, id)
);
CREATE UNIQUE INDEX integrations_live_name ON integrations (tenant_id, name) WHERE deleted_at IS NULL;
-- Listing order is (created_at, id): stable, and a cursor is the last pair.
CREATE INDEX integrations_list ON integrations (tenant_id, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX integrations_by_type ON integrations (tenant_id, type, created_at, id) WHERE deleted_at IS NULL;

CREATE TABLE connection_profiles (
  tenant_id        uuid NOT NULL,
  id               uuid NOT NULL DEFAULT gen_random_uuid(),
  name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
  integration_type text NOT NULL REFERENCES integration_types (id),
  default_config   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(default_config) = 'object'),
  is_default       boolean NOT NULL DEFAULT false,
  last_used_at     timestamptz,
  version          bigint NOT NULL DEFAULT 1,
  created_by       text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, name)
);
CREATE UNIQUE INDEX connection_profiles_one_default ON connection_profiles (tenant_id, integration_type) WHERE is_default;
CREATE INDEX connection_profiles_list ON connection_profiles (tenant_id, created_at, id);

CREATE TABLE health_checks (
  tenant_id      uuid NOT NULL,
  id             bigint GENERATED ALWAYS AS IDENTITY,
  integration_id uuid NOT NULL,
  event_id       uuid NOT NULL,  -- the integration.health_checked event: a redelivery is a no-op
  status         text NOT NULL CHECK (status IN ('healthy', 'degraded', 'unhealthy', 'unknown')),
  latency_ms     bigint NOT NULL DEFAULT 0 CHECK (latency_ms >= 0),
  message        text NOT NULL DEFAULT '',
  checked_at     timestamptz NOT NULL,
  recorded_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, event_id),
  FOREIGN KEY (tenant_id, integration_id) REFERENCES integrations (tenant_id, id)
);
CREATE INDEX health_checks_history ON health_checks (tenant_id, integration_id, checked_at DESC, id DESC);

CREATE TABLE doctor_checks (
  tenant_id      uuid NOT NULL,
  id             uuid NOT NULL DEFAULT gen_random_uuid(),
  integration_id uuid NOT NULL,
  overall_status text NOT NULL,
  report         jsonb NOT NULL,
  evidence       text NOT NULL DEFAULT '',  -- JSONL evidence log of the run
  duration_ms    bigint NOT NULL DEFAULT 0,
  run_at         timestamptz NOT NULL DEFAULT now(),
  run_by         text NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, integration_id) REFERENCES integrations (tenant_id, id)
);
CREATE INDEX doctor_checks_history ON doctor_checks (tenant_id, integration_id, run_at DESC);

CREATE TABLE audit_logs (
  tenant_id   uuid NOT NULL,
  id          bigint GENERATED ALWAYS AS IDENTITY,
  actor       text NOT NULL,
  action      text NOT NULL,   -- integration.create, profile.update, ...
  entity_type text NOT NULL,
  entity_id   uuid,
  before      jsonb,
  after       jsonb,
  at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id)
);
CREATE INDEX audit_logs_entity ON audit_logs (tenant_id, entity_id, at);

-- Idempotency-Key on POST: the first response is kept and replayed.
CREATE TABLE idempotency_keys (
  tenant_id     uuid NOT NULL,
  key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
  request_hash  text NOT NULL,
  status        int NOT NULL,
  response      jsonb NOT NULL,
  headers       jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);

-- Transactional outbox: written in the same transaction as the change it
-- announces, published by the forwarder with Nats-Msg-Id = event_id.
-- partition = hash of the aggregate (integration) id: a forwarder holds a
-- partition's advisory lock while it publishes, so replicas share the work
-- and one integration's events keep their commit order.
CREATE TABLE outbox (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id    uuid NOT NULL,
  aggregate_id uuid NOT NULL,
  partition    int NOT NULL CHECK (partition >= 0),
  subject      text NOT NULL,
  event_id     uuid NOT NULL,
  payload      bytea NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (tenant_id, event_id)
);
CREATE INDEX outbox_pending ON outbox (partition, id);

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Delivered at commit; the forwarder wakes without polling.
  PERFORM pg_notify('inthub_outbox', '');
  RETURN NULL;
END
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Row-level security.
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['integrations', 'connection_profiles', 'health_checks', 'doctor_checks',
                           'audit_logs', 'idempotency_keys', 'outbox'] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I TO inthub_app USING (tenant_id = app_tenant()) WITH CHECK (tenant_id = app_tenant())', t);
  END LOOP;
END
$$;
-- The forwarder sees every tenant's outbox rows and nothing else.
CREATE POLICY forwarder ON outbox TO inthub_forwarder USING (true);

GRANT USAGE ON SCHEMA public TO inthub_app, inthub_forwarder;
GRANT EXECUTE ON FUNCTION app_tenant() TO inthub_app;
GRANT SELECT ON integration_types, plugin_metadata TO inthub_app;
GRANT SELECT, INSERT, UPDATE ON integrations, connection_profiles TO inthub_app;
GRANT DELETE ON connection_profiles TO inthub_app;
GRANT SELECT, INSERT ON health_checks, doctor_checks, audit_logs TO inthub_app;
GRANT SELECT, INSERT, DELETE ON idempotency_keys TO inthub_app;
GRANT INSERT ON outbox TO inthub_app;
GRANT SELECT, DELETE ON outbox TO inthub_forwarder;
