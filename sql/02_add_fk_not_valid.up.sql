-- NOT VALID: existing rows are not scanned now, so the SHARE ROW EXCLUSIVE lock is brief.
ALTER TABLE {table}
    ADD CONSTRAINT session_requests_preferred_mechanic_id_fkey
    FOREIGN KEY (preferred_mechanic_id) REFERENCES {referenced_table} (id)
    ON DELETE SET NULL
    NOT VALID;
