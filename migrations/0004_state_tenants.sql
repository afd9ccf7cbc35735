-- The integrations bucket (INTEGRATIONS_STATE in JetStream) is rebuilt from
-- the database when they disagree: a NATS store lost or replaced (a new
-- server, a move to a cluster) must not leave the workers believing that
-- existing integrations are unknown. The catalog reads every tenant's
-- integrations for that, tenant by tenant as inthub_app under row-level
-- security; this function only names the tenants, as the owner of the
-- tables (the health_sweep policy of 0003 lets the owner read them).
CREATE FUNCTION integration_tenants()
  RETURNS TABLE (tenant_id uuid)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
    SELECT DISTINCT i.tenant_id FROM public.integrations i
  $$;

REVOKE ALL ON FUNCTION integration_tenants() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION integration_tenants() TO inthub_app;
