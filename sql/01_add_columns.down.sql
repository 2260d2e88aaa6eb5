ALTER TABLE {table}
    DROP COLUMN IF EXISTS preferred_mechanic_id,
    DROP COLUMN IF EXISTS priority_window_minutes,
    DROP COLUMN IF EXISTS priority_notified_at;
