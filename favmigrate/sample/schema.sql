-- The sample database before the favorites-priority migration (Supabase-like).
--
-- Run by favmigrate.sample.load_sample() inside one transaction with
--   SET LOCAL search_path TO <target schema>, public
-- so the unqualified objects below land in the target schema. The auth stub is always `auth`.
-- Works on PostgreSQL 12 and later.

DO $$
BEGIN
    -- gen_random_uuid() is built in from PostgreSQL 13; before that it comes from pgcrypto.
    IF to_regprocedure('gen_random_uuid()') IS NULL THEN
        CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;
    END IF;
END
$$;

-- auth: a stub of Supabase's auth schema, shared by every sample schema in the database.
CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE IF NOT EXISTS auth.users (
    id    uuid PRIMARY KEY,
    email text
);

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
    LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

CREATE TABLE mechanics (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid,
    first_name text NOT NULL,
    last_name  text NOT NULL,
    status     text NOT NULL DEFAULT 'active',
    is_online  boolean NOT NULL DEFAULT false,
    created_at timestamptz DEFAULT now()
);

CREATE TYPE session_request_status AS ENUM ('pending', 'accepted', 'cancelled');

CREATE TABLE session_requests (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    customer_id          uuid NOT NULL,
    mechanic_id          uuid REFERENCES mechanics (id) ON DELETE SET NULL,
    session_type         text NOT NULL DEFAULT 'diagnostic',
    plan_code            text,
    status               session_request_status NOT NULL DEFAULT 'pending',
    accepted_at          timestamptz,
    notification_sent_at timestamptz,
    metadata             jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX session_requests_status_idx ON session_requests (status);
CREATE INDEX session_requests_created_at_idx ON session_requests (created_at);

CREATE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER session_requests_set_updated_at
    BEFORE UPDATE ON session_requests
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

ALTER TABLE session_requests ENABLE ROW LEVEL SECURITY;

CREATE POLICY session_requests_customer_select ON session_requests
    FOR SELECT
    USING (customer_id = auth.uid());

CREATE TABLE feature_flags (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    flag_key           text NOT NULL UNIQUE,
    flag_name          text NOT NULL,
    description        text,
    is_enabled         boolean NOT NULL DEFAULT false,
    enabled_for_roles  text[] NOT NULL DEFAULT '{}',
    rollout_percentage integer NOT NULL DEFAULT 0
        CHECK (rollout_percentage BETWEEN 0 AND 100),
    metadata           jsonb NOT NULL DEFAULT '{}',
    updated_at         timestamptz NOT NULL DEFAULT now()
);

INSERT INTO feature_flags (flag_key, flag_name, description, is_enabled, enabled_for_roles,
                           rollout_percentage, metadata)
VALUES ('ENABLE_FAVORITES_PRIORITY', 'Favorites priority',
        'Offer a new session request to the customer''s preferred mechanic first, for a short window.',
        false, '{customer}', 0, '{"phase": 4}');
