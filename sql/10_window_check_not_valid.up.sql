-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step window-check-not-valid: lock brief.
ALTER TABLE "public"."session_requests"
    ADD CONSTRAINT "session_requests_priority_window_not_null" CHECK ("priority_window_minutes" IS NOT NULL) NOT VALID;
