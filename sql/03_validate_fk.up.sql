-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step validate-fk: lock online.
-- VALIDATE scans the table under SHARE UPDATE EXCLUSIVE: reads and writes continue meanwhile.
ALTER TABLE "public"."session_requests"
    VALIDATE CONSTRAINT "session_requests_preferred_mechanic_id_fkey";
