ALTER TABLE {table}
    DROP CONSTRAINT IF EXISTS session_requests_preferred_mechanic_id_fkey;
