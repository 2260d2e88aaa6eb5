ALTER TABLE {table}
    ADD CONSTRAINT session_requests_priority_window_not_null
    CHECK (priority_window_minutes IS NOT NULL) NOT VALID;
