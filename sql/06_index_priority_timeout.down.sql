DROP INDEX CONCURRENTLY IF EXISTS {schema}.session_requests_priority_timeout_idx;
