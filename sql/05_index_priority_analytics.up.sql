CREATE INDEX CONCURRENTLY session_requests_priority_analytics_idx
    ON {table} (preferred_mechanic_id, priority_notified_at, status)
    WHERE preferred_mechanic_id IS NOT NULL;
