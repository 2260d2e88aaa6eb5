-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step add-columns: lock brief.
-- Adding nullable columns, and NOT NULL columns with a constant default, only touches the catalog: no table rewrite, the ACCESS EXCLUSIVE lock is held for milliseconds.
ALTER TABLE "public"."session_requests"
    ADD COLUMN IF NOT EXISTS "preferred_mechanic_id" uuid,
    ADD COLUMN IF NOT EXISTS "priority_window_minutes" integer NOT NULL DEFAULT 10,
    ADD COLUMN IF NOT EXISTS "priority_notified_at" timestamp with time zone;
