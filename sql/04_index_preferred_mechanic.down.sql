DROP INDEX CONCURRENTLY IF EXISTS {schema}.session_requests_preferred_mechanic_idx;
