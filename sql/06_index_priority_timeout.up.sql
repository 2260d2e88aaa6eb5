-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step index-priority-timeout: lock concurrent, outside any transaction block.
-- CONCURRENTLY: built without blocking writes, outside any transaction block.
CREATE INDEX CONCURRENTLY "session_requests_priority_timeout_idx"
    ON "public"."session_requests" ("priority_notified_at", "status")
    WHERE priority_notified_at IS NOT NULL AND status = 'pending';
