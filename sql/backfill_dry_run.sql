-- One batch of the backfill, dry run: the same classification (backfill_classify.sql) without row
-- locks, run in a READ ONLY transaction. Returns the counts the real batch would report, then one row
-- per reject and conflict. With unique indexes (claims), the batch also records in temporary tables
-- the keys it would write, so that a later batch of the same dry run sees them as the real run would.
{classify}{claims}
SELECT 'summary' AS kind, NULL::text AS row_id, NULL::text AS key, NULL::text AS reason, NULL::text AS value,
       NULL::text AS current_value,
       jsonb_build_object(
           'in_range', (SELECT count(*) FROM seen),
           'last', {last_key},
           'candidates', (SELECT count(*) FROM decided),
           'updated', {updated_counts},
           'rows_updated', (SELECT count(*) FROM decided AS d WHERE 'update' IN ({actions})),
           'rejected', coalesce((SELECT jsonb_object_agg(x.reason, x.n)
                                 FROM (SELECT reason, count(*) AS n FROM rejects GROUP BY reason) AS x),
                                jsonb_build_object())
       ) AS summary
UNION ALL
-- the values as text: the rejects file carries them as they are, never decoded
SELECT 'reject', r.row_id::text, r.key, r.reason, r.value::text, r.current_value::text, NULL
FROM rejects AS r
