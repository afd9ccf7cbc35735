-- Stale health reads unknown.
--
-- An integration whose last health check is older than twice its interval
-- (healthIntervalSeconds in its config, else the catalog's default) must not
-- go on reading healthy: the catalog sweeps for such integrations and
-- records `unknown` for them, with integration.health_changed through the
-- outbox like any other transition (services/catalog/health).
--
-- The sweep has to look across tenants, and inthub_app sees one tenant per
-- transaction (row-level security). So the look across is a function that
-- runs as the owner of the tables and returns nothing but tenant ids and
-- the earliest moment one of their integrations turns stale; the sweep then
-- works tenant by tenant as inthub_app, under row-level security as always.

-- The interval of an integration, in seconds; the schemas allow 30 to 86400,
-- anything else in a config (not a number, out of range) takes the default,
-- as the poller does.
CREATE FUNCTION health_interval_seconds(config jsonb, default_seconds integer) RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$
    SELECT CASE WHEN jsonb_typeof(config -> 'healthIntervalSeconds') = 'number'
      THEN CASE WHEN (config ->> 'healthIntervalSeconds')::numeric BETWEEN 1 AND 31536000
        THEN floor((config ->> 'healthIntervalSeconds')::numeric)::integer
        ELSE default_seconds END
      ELSE default_seconds END
  $$;

-- FORCE ROW LEVEL SECURITY holds the owner too (unless it is a superuser):
-- the function below reads as the owner, through this policy. The owner
-- owns the table and could lift row security anyway; inthub_app gets no
-- new policy.
DO $$
BEGIN
  EXECUTE format('CREATE POLICY health_sweep ON integrations FOR SELECT TO %I USING (true)', current_user);
END
$$;

CREATE FUNCTION health_stale_tenants(default_seconds integer)
  RETURNS TABLE (tenant_id uuid, stale_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
    SELECT i.tenant_id,
           min(i.last_health_check + make_interval(secs => 2 * public.health_interval_seconds(i.config, default_seconds)))
    FROM public.integrations i
    WHERE i.deleted_at IS NULL AND i.health_status <> 'unknown' AND i.last_health_check IS NOT NULL
    GROUP BY i.tenant_id
  $$;

REVOKE ALL ON FUNCTION health_stale_tenants(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION health_stale_tenants(integer), health_interval_seconds(jsonb, integer) TO inthub_app;
