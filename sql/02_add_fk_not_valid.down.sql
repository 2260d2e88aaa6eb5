-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step add-fk-not-valid: lock brief.
ALTER TABLE "public"."session_requests"
    DROP CONSTRAINT IF EXISTS "session_requests_preferred_mechanic_id_fkey";
