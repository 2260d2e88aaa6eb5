-- One batch of the backfill, real run: the classification (backfill_classify.sql), the update of
-- the columns, every reject and conflict recorded once per row and key, and the batch's counts.
-- Runs in its own short transaction together with the checkpoint update. row_match joins the
-- update to the locked rows (by ctid for page batches: a row that changed between the statement's
-- snapshot and its lock is then left for the catch-up pass, and the counts, taken from RETURNING,
-- say so).
{classify},
updated AS (
    UPDATE {table} AS t
    SET {assignments}
    FROM decided AS d
    WHERE {row_match}
      AND 'update' IN ({actions})
    RETURNING {updated_flags}
),
recorded AS (
    -- a row visited twice (the catch-up pass, a row moved by an update) is reported once
    INSERT INTO {rejects_table} (migration_id, target_schema, row_id, key, reason, value, current_value)
    SELECT %(migration_id)s, %(target_schema)s, r.row_id::text, coalesce(r.key, ''), r.reason, r.value, r.current_value
    FROM rejects AS r
    ON CONFLICT DO NOTHING
    RETURNING reason
)
SELECT 'summary' AS kind, NULL::text AS row_id, NULL::text AS key, NULL::text AS reason, NULL::text AS value,
       NULL::text AS current_value,
       jsonb_build_object(
           'in_range', (SELECT count(*) FROM seen),
           'last', {last_key},
           'candidates', (SELECT count(*) FROM decided),
           'updated', {updated_counts},
           'rows_updated', (SELECT count(*) FROM updated),
           -- candidates another transaction held locked (SKIP LOCKED): retried at the end of the run
           'skipped', (SELECT coalesce(jsonb_agg(s.row_id::text), '[]'::jsonb) FROM seen AS s
                       WHERE s.wanted AND NOT EXISTS (SELECT FROM batch AS b WHERE b.row_ctid = s.row_ctid)),
           'rejected', coalesce((SELECT jsonb_object_agg(x.reason, x.n)
                                 FROM (SELECT reason, count(*) AS n FROM recorded GROUP BY reason) AS x),
                                jsonb_build_object())
       ) AS summary
