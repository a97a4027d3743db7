-- examlink hub schema v3: people's accounts, their sessions, and the append-only audit trail.
-- Applied once, inside the configured schema (search_path). See hub/src/users.rs, hub/src/audit.rs.

-- People who use the HTTP API and pages. Devices keep their own table (`devices`).
CREATE TABLE users (
    name           text PRIMARY KEY,
    role           text NOT NULL CHECK (role IN ('reader', 'reviewer', 'admin')),
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Every session opened before this instant is void (set by rotate and revoke).
    sessions_after timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    revoked_at     timestamptz
);

-- A login: a browser session (cookie + CSRF token) or an API bearer token. Only the SHA-256 of
-- the token is stored; a session is valid while unexpired, not logged out, its user not
-- revoked and not rotated since it was opened.
CREATE TABLE sessions (
    token_sha256  bytea PRIMARY KEY,
    user_name     text NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('page', 'api')),
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    ended_at      timestamptz
);
CREATE INDEX sessions_user_idx ON sessions (user_name);

-- Who did what, when: every read of patient data and every change. Append-only: UPDATE,
-- DELETE and TRUNCATE raise an error (the trigger holds for the table's owner too).
CREATE TABLE audit (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor   text NOT NULL,
    action  text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_at_idx ON audit (at);
CREATE INDEX audit_actor_idx ON audit (actor, at);

CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit table is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();
