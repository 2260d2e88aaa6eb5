-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step index-priority-timeout: lock concurrent, outside any transaction block.
DROP INDEX CONCURRENTLY IF EXISTS "public"."session_requests_priority_timeout_idx";
