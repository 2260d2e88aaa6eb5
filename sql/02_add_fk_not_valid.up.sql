-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step add-fk-not-valid: lock brief.
-- NOT VALID: existing rows are not scanned now, so the SHARE ROW EXCLUSIVE lock is brief.
ALTER TABLE "public"."session_requests"
    ADD CONSTRAINT "session_requests_preferred_mechanic_id_fkey"
    FOREIGN KEY ("preferred_mechanic_id") REFERENCES "public"."mechanics" ("id")
    ON DELETE SET NULL
    NOT VALID;
