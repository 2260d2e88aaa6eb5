CREATE INDEX CONCURRENTLY session_requests_preferred_mechanic_idx
    ON {table} (preferred_mechanic_id)
    WHERE preferred_mechanic_id IS NOT NULL;
