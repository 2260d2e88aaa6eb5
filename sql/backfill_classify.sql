-- The shared head of one backfill batch (used by backfill_batch.sql and backfill_dry_run.sql):
-- reads the batch's rows that carry legacy metadata, validates every legacy value set-based, looks
-- the mechanics up in one semi-join, and decides per key: update, same, conflict or a reject reason.
--
-- Nothing here can raise on bad data: every cast sits in a CASE branch that is reached only after
-- a regular expression or a range test proved the cast safe (no "99999999999"::int overflow, no
-- timestamptz cast of 2025-02-30), so one bad value never aborts the batch.
--
-- Fragments filled by favmigrate.backfill:
--   in_batch / candidate  predicates on alias t choosing the batch's rows (key or page range)
--   row_lock              FOR NO KEY UPDATE OF t SKIP LOCKED for a real run, empty for a dry run
--   mechanic_lock         FOR KEY SHARE OF m when triggers are disabled (then the only guard against a
--                         mechanic deleted before the batch commits), else empty
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
           t.{mechanic_column} AS cur_mechanic,
           t.{window_column} AS cur_window,
           t.{notified_column} AS cur_notified,
           jsonb_typeof(t.{metadata}) = 'object' AS is_object,
           CASE WHEN jsonb_typeof(t.{metadata}) = 'object' THEN nullif(t.{metadata} -> {mechanic_key}, 'null') END
               AS mechanic_raw,
           CASE WHEN jsonb_typeof(t.{metadata}) = 'object' THEN nullif(t.{metadata} -> {window_key}, 'null') END
               AS window_raw,
           CASE WHEN jsonb_typeof(t.{metadata}) = 'object' THEN nullif(t.{metadata} -> {notified_key}, 'null') END
               AS notified_raw,
           -- the text of each value that is a JSON string (NULL for any other JSON type)
           CASE WHEN jsonb_typeof(t.{metadata}) = 'object' THEN
                CASE WHEN jsonb_typeof(t.{metadata} -> {mechanic_key}) = 'string' THEN t.{metadata} ->> {mechanic_key} END
           END AS mechanic_text,
           CASE WHEN jsonb_typeof(t.{metadata}) = 'object' THEN
                CASE WHEN jsonb_typeof(t.{metadata} -> {window_key}) = 'string' THEN t.{metadata} ->> {window_key} END
           END AS window_text,
           CASE WHEN jsonb_typeof(t.{metadata}) = 'object' THEN
                CASE WHEN jsonb_typeof(t.{metadata} -> {notified_key}) = 'string' THEN t.{metadata} ->> {notified_key} END
           END AS notified_text
    FROM {table} AS t
    WHERE t.ctid = ANY (ARRAY(SELECT s.row_ctid FROM seen AS s WHERE s.wanted))
    {row_lock}
),
typed AS MATERIALIZED (
    -- materialized: each regular expression runs once per row, not once per reference
    SELECT b.*,
           CASE WHEN b.mechanic_text ~ {uuid_pattern} THEN b.mechanic_text::uuid END AS mechanic_value,
           -- an integer-valued JSON number, or a JSON string of ASCII digits (NULL: neither)
           CASE WHEN jsonb_typeof(b.window_raw) = 'number'
                THEN CASE WHEN b.window_raw::numeric = trunc(b.window_raw::numeric) THEN b.window_raw::numeric END
                WHEN b.window_text ~ {digits_pattern}
                THEN CASE WHEN length(ltrim(b.window_text, '0')) <= 18
                          THEN ('0' || ltrim(b.window_text, '0'))::numeric
                          ELSE 1e18 END  -- all digits but longer than 18: out of range, not worth a cast
           END AS window_number,
           -- the text of a well-formed timestamp (the pattern bounds every field but the day of the month)
           CASE WHEN b.notified_text ~ {timestamp_pattern} THEN b.notified_text END AS notified_string
    FROM batch AS b
),
parsed AS (
    SELECT y.*,
           CASE WHEN y.window_number BETWEEN {window_min} AND {window_max}
                THEN y.window_number::integer END AS window_value,
           -- a real calendar day (no 2025-02-30, no year 0) is safe to cast; no offset means UTC
           CASE WHEN substr(y.notified_string, 1, 4) <> '0000'
                 AND substr(y.notified_string, 9, 2)::integer <= CASE
                         WHEN substr(y.notified_string, 6, 2) = '02' THEN
                             CASE WHEN mod(substr(y.notified_string, 1, 4)::integer, 4) = 0
                                   AND (mod(substr(y.notified_string, 1, 4)::integer, 100) <> 0
                                        OR mod(substr(y.notified_string, 1, 4)::integer, 400) = 0)
                                  THEN 29 ELSE 28 END
                         WHEN substr(y.notified_string, 6, 2) IN ('04', '06', '09', '11') THEN 30
                         ELSE 31 END
                THEN (y.notified_string
                      || CASE WHEN right(y.notified_string, 1) <> 'Z'
                               AND strpos(substr(y.notified_string, 17), '+') = 0
                               AND strpos(substr(y.notified_string, 17), '-') = 0
                              THEN '+00' ELSE '' END)::timestamptz
           END AS notified_value
    FROM typed AS y
),
mechanics AS (
    SELECT m.{referenced_column} AS id
    FROM {referenced_table} AS m
    WHERE m.{referenced_column} IN (SELECT p.mechanic_value FROM parsed AS p WHERE p.mechanic_value IS NOT NULL)
    {mechanic_lock}
),
judged AS (
    SELECT p.*,
           CASE WHEN p.mechanic_raw IS NULL THEN NULL
                WHEN p.mechanic_value IS NULL THEN 'invalid_uuid'
                WHEN m.id IS NULL THEN 'unknown_mechanic'
                ELSE 'ok' END AS mechanic_status,
           CASE WHEN p.window_raw IS NULL THEN NULL
                WHEN p.window_number IS NULL THEN 'invalid_integer'
                WHEN p.window_value IS NULL THEN 'out_of_range'
                ELSE 'ok' END AS window_status,
           CASE WHEN p.notified_raw IS NULL THEN NULL
                WHEN p.notified_value IS NULL THEN 'invalid_timestamp'
                ELSE 'ok' END AS notified_status
    FROM parsed AS p
    LEFT JOIN mechanics AS m ON m.id = p.mechanic_value
),
decided AS (
    -- never overwrite: a column is filled only while NULL (the window: NULL or its default); a
    -- different value already there is a conflict, unless overwrite is asked for
    SELECT j.*,
           CASE WHEN j.mechanic_status = 'ok' THEN
                CASE WHEN j.cur_mechanic IS NULL THEN 'update'
                     WHEN j.cur_mechanic = j.mechanic_value THEN 'same'
                     WHEN %(overwrite)s THEN 'update'
                     ELSE 'conflict' END END AS mechanic_action,
           CASE WHEN j.window_status = 'ok' THEN
                CASE WHEN j.cur_window = j.window_value THEN 'same'
                     WHEN j.cur_window IS NULL OR j.cur_window = {window_default} THEN 'update'
                     WHEN %(overwrite)s THEN 'update'
                     ELSE 'conflict' END END AS window_action,
           CASE WHEN j.notified_status = 'ok' THEN
                CASE WHEN j.cur_notified IS NULL THEN 'update'
                     WHEN j.cur_notified = j.notified_value THEN 'same'
                     WHEN %(overwrite)s THEN 'update'
                     ELSE 'conflict' END END AS notified_action
    FROM judged AS j
),
rejects AS (
    SELECT d.row_id, NULL::text AS key, 'metadata_not_object' AS reason, d.meta AS value, NULL::jsonb AS current_value
    FROM decided AS d WHERE NOT d.is_object
    UNION ALL
    SELECT d.row_id, {mechanic_key}, CASE WHEN d.mechanic_action = 'conflict' THEN 'conflict' ELSE d.mechanic_status END,
           d.mechanic_raw, CASE WHEN d.mechanic_action = 'conflict' THEN to_jsonb(d.cur_mechanic) END
    FROM decided AS d WHERE d.mechanic_status <> 'ok' OR d.mechanic_action = 'conflict'
    UNION ALL
    SELECT d.row_id, {window_key}, CASE WHEN d.window_action = 'conflict' THEN 'conflict' ELSE d.window_status END,
           d.window_raw, CASE WHEN d.window_action = 'conflict' THEN to_jsonb(d.cur_window) END
    FROM decided AS d WHERE d.window_status <> 'ok' OR d.window_action = 'conflict'
    UNION ALL
    SELECT d.row_id, {notified_key}, CASE WHEN d.notified_action = 'conflict' THEN 'conflict' ELSE d.notified_status END,
           d.notified_raw, CASE WHEN d.notified_action = 'conflict' THEN to_jsonb(d.cur_notified) END
    FROM decided AS d WHERE d.notified_status <> 'ok' OR d.notified_action = 'conflict'
)
