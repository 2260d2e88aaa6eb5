ALTER TABLE {table}
    ALTER COLUMN priority_window_minutes SET DEFAULT 10;
