-- The validated CHECK proves there is no NULL, so SET NOT NULL skips its full-table scan (PG 12+).
ALTER TABLE {table}
    ALTER COLUMN priority_window_minutes SET NOT NULL;
ALTER TABLE {table}
    DROP CONSTRAINT session_requests_priority_window_not_null;
