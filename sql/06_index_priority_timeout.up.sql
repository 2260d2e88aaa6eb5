CREATE INDEX CONCURRENTLY session_requests_priority_timeout_idx
    ON {table} (priority_notified_at, status)
    WHERE priority_notified_at IS NOT NULL AND status = 'pending';
