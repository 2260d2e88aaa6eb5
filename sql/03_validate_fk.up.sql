-- VALIDATE scans the table under SHARE UPDATE EXCLUSIVE: reads and writes continue meanwhile.
ALTER TABLE {table}
    VALIDATE CONSTRAINT session_requests_preferred_mechanic_id_fkey;
