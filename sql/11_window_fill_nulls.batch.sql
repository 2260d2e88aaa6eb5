-- One batch of the NULL fill: run repeatedly by apply, one short transaction per batch, keyset by
-- primary key, until it returns no row.
WITH batch AS (
    SELECT id
    FROM {table}
    WHERE id > {after_id} AND priority_window_minutes IS NULL
    ORDER BY id
    LIMIT {batch_size}
)
UPDATE {table} AS t
SET priority_window_minutes = 10
FROM batch
WHERE t.id = batch.id AND t.priority_window_minutes IS NULL
RETURNING t.id;
