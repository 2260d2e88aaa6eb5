-- Generated from verify/migration.toml by `python -m favmigrate.ops`: do not edit; edit the spec and regenerate.
-- Step column-comments: lock brief.
COMMENT ON COLUMN "public"."session_requests"."preferred_mechanic_id" IS 'Favorite mechanic who gets the first, exclusive notification for this request (Phase 4; was metadata.priority_mechanic_id)';
COMMENT ON COLUMN "public"."session_requests"."priority_window_minutes" IS 'Minutes the preferred mechanic has to accept before the request is broadcast (Phase 4; was metadata.priority_window_minutes)';
COMMENT ON COLUMN "public"."session_requests"."priority_notified_at" IS 'When the preferred mechanic was notified; NULL when no priority notification was sent (Phase 4; was metadata.priority_notified_at)';
