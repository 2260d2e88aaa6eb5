-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step index-preferred-mechanic: lock concurrent, outside any transaction block.
-- CONCURRENTLY: built without blocking writes, outside any transaction block.
CREATE INDEX CONCURRENTLY "session_requests_preferred_mechanic_idx"
    ON "public"."session_requests" ("preferred_mechanic_id")
    WHERE preferred_mechanic_id IS NOT NULL;
