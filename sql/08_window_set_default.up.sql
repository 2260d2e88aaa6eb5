-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step window-set-default: lock brief.
ALTER TABLE "public"."session_requests"
    ALTER COLUMN "priority_window_minutes" SET DEFAULT 10;
