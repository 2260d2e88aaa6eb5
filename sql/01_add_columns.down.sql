-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step add-columns: lock brief.
ALTER TABLE "public"."session_requests"
    DROP COLUMN IF EXISTS "preferred_mechanic_id",
    DROP COLUMN IF EXISTS "priority_window_minutes",
    DROP COLUMN IF EXISTS "priority_notified_at";
