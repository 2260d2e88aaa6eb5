COMMENT ON COLUMN {table}.preferred_mechanic_id IS {comment_preferred_mechanic_id};
COMMENT ON COLUMN {table}.priority_window_minutes IS {comment_priority_window_minutes};
COMMENT ON COLUMN {table}.priority_notified_at IS {comment_priority_notified_at};
