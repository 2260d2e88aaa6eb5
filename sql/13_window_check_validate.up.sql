ALTER TABLE {table}
    VALIDATE CONSTRAINT session_requests_priority_window_not_null;
