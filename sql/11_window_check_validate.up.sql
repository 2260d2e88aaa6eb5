-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step window-check-validate: lock online.
-- VALIDATE scans under SHARE UPDATE EXCLUSIVE: reads and writes continue meanwhile.
ALTER TABLE "public"."session_requests"
    VALIDATE CONSTRAINT "session_requests_priority_window_not_null";
