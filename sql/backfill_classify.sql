-- The shared head of one backfill batch (used by backfill_batch.sql and backfill_dry_run.sql): reads
-- the batch's rows that carry legacy metadata, reads every legacy value set-based with the rules of its
-- column type (favmigrate/coltypes.py), looks each referenced row up in one semi-join, and decides per
-- key: update, same, conflict or a reject reason. Per column i the CTEs add c<i>_cur (the column now),
-- c<i>_raw (the JSON value), c<i>_text (its text when a JSON string), c<i>_parsed, c<i>_value,
-- c<i>_status ('ok' or a reject reason) and c<i>_action.
--
-- Nothing here can raise on bad data: every cast sits in a CASE branch that is reached only after
-- a regular expression or a range test proved the cast safe (no "99999999999"::int overflow, no
-- timestamptz cast of 2025-02-30), so one bad value never aborts the batch.
--
-- Fragments filled by favmigrate.backfill_sql:
--   in_batch / candidate  predicates on alias t choosing the batch's rows (key or page range)
--   row_lock              FOR NO KEY UPDATE OF t SKIP LOCKED for a real run, empty for a dry run
--   unique_checks / decide_from  only for a spec with unique indexes on its columns: the key each row would
--                         write and whether another row holds it, or an earlier row of the batch writes it
--   lookups / lookup_joins  one CTE per referenced column (with FOR KEY SHARE OF m when triggers are
--                         disabled: then the only guard against a row deleted before the batch commits)
WITH seen AS MATERIALIZED (
    -- the batch's rows as the statement's snapshot sees them, read once (the summary counts them too);
    -- candidates missing from batch below were locked by another transaction (or changed since the
    -- snapshot) and are left for a later retry
    SELECT t.ctid AS row_ctid, t.{pk} AS row_id, {candidate} AS wanted
    FROM {table} AS t
    WHERE {in_batch}
),
batch AS (
    -- every metadata lookup happens once here (a row changed since the snapshot has another ctid, so
    -- the lock's re-check drops it: these values are always the ones of the version we hold the lock on)
    SELECT t.ctid AS row_ctid,
           t.{pk} AS row_id,
           t.{metadata} AS meta,
           jsonb_typeof(t.{metadata}) = 'object' AS is_object,
           {read_columns}
    FROM {table} AS t
    WHERE t.ctid = ANY (ARRAY(SELECT s.row_ctid FROM seen AS s WHERE s.wanted))
    {row_lock}
),
typed AS MATERIALIZED (
    -- materialized: each regular expression runs once per row, not once per reference
    SELECT b.*,
           {parsed_columns}
    FROM batch AS b
),
parsed AS (
    SELECT y.*,
           {value_columns}
    FROM typed AS y
),
{lookups}
judged AS (
    SELECT p.*,
           {status_columns}
    FROM parsed AS p
    {lookup_joins}
),
{unique_checks}decided AS (
    -- never overwrite: a column is filled only while NULL (a NOT NULL column with a default: NULL or
    -- its default); a different value already there is a conflict, unless overwrite is asked for
    SELECT j.*,
           {action_columns}
    FROM {decide_from} AS j
),
rejects AS (
    SELECT d.row_id, NULL::text AS key, 'metadata_not_object' AS reason, d.meta AS value, NULL::jsonb AS current_value
    FROM decided AS d WHERE NOT d.is_object
    {column_rejects}
)
