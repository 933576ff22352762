-- Dashboard sign-in (issue 11): a session per browser, opened with an API key. Only the token's digest is
-- stored; a session ends at its expiry, at sign-out, or when its API key is revoked. Additions only.
CREATE TABLE ui_sessions (
    token_sha256 bytea PRIMARY KEY,
    api_key_id   uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
