-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step window-set-not-null: lock brief.
-- The validated CHECK proves there is no NULL, so SET NOT NULL skips its full-table scan (PG 12+).
ALTER TABLE "public"."session_requests"
    ALTER COLUMN "priority_window_minutes" SET NOT NULL;
ALTER TABLE "public"."session_requests"
    DROP CONSTRAINT "session_requests_priority_window_not_null";
