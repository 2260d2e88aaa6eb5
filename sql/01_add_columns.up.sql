-- Adding nullable columns, and a NOT NULL column with a constant default, only touches the catalog
-- (PostgreSQL 11+): no table rewrite, the ACCESS EXCLUSIVE lock is held for milliseconds.
ALTER TABLE {table}
    ADD COLUMN IF NOT EXISTS preferred_mechanic_id uuid,
    ADD COLUMN IF NOT EXISTS priority_window_minutes integer NOT NULL DEFAULT 10,
    ADD COLUMN IF NOT EXISTS priority_notified_at timestamptz;
