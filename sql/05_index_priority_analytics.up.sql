-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step index-priority-analytics: lock concurrent, outside any transaction block.
-- CONCURRENTLY: built without blocking writes, outside any transaction block.
CREATE INDEX CONCURRENTLY "session_requests_priority_analytics_idx"
    ON "public"."session_requests" ("preferred_mechanic_id", "priority_notified_at", "status")
    WHERE preferred_mechanic_id IS NOT NULL;
