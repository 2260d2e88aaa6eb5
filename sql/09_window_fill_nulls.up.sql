-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step window-fill-nulls: lock batched.
-- One batch of the NULL fill, run repeatedly, one short transaction per batch, keyset by primary key, until it returns no row.
-- The first batch has no lower key bound; each next one starts after the last key returned.
WITH batch AS (
    SELECT "id"
    FROM "public"."session_requests"
    WHERE "priority_window_minutes" IS NULL
    ORDER BY "id"
    LIMIT %(batch_size)s
)
UPDATE "public"."session_requests" AS t
SET "priority_window_minutes" = 10
FROM batch
WHERE t."id" = batch."id" AND t."priority_window_minutes" IS NULL
RETURNING t."id";
WITH batch AS (
    SELECT "id"
    FROM "public"."session_requests"
    WHERE "id" > %(after_id)s AND "priority_window_minutes" IS NULL
    ORDER BY "id"
    LIMIT %(batch_size)s
)
UPDATE "public"."session_requests" AS t
SET "priority_window_minutes" = 10
FROM batch
WHERE t."id" = batch."id" AND t."priority_window_minutes" IS NULL
RETURNING t."id";
