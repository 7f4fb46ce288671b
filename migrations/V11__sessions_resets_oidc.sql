-- Sessions that last (issue 16): a login starts a session, whose refresh
-- tokens rotate; password resets; sign-in through OpenID Connect.

-- One signed-in device. Access tokens name their session (`sid`), so
-- revoking the session stops them at once.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    -- 'password' or 'oidc:<provider>'
    method       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    -- Every refresh moves it: the session lives while it is used.
    expires_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    -- 'logout', 'logout_all', 'password_changed', 'password_reset',
    -- 'refresh_token_reused', 'user_deactivated', 'sessions_max'
    revoked_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id) WHERE revoked_at IS NULL;

-- A session's refresh tokens, its family: one current (retired_at NULL),
-- the others retired by rotation and kept so that a retired one coming back
-- is recognised as reuse. Only SHA-256 hashes are stored.
CREATE TABLE refresh_tokens (
    id          INTEGER PRIMARY KEY,
    session_id  INTEGER NOT NULL REFERENCES sessions(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    retired_at  INTEGER
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- One-time password reset tokens (hashed), valid for a short time.
CREATE TABLE password_resets (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
CREATE INDEX password_resets_by_user ON password_resets (user_id);

-- Users signed in through an identity provider, by (issuer, subject): the
-- provider's stable id, never the email (which can change hands).
CREATE TABLE oidc_identities (
    issuer      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    email       TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
);

-- A sign-in under way: between /start and /callback. Keyed by the hash of
-- `state`; used once.
CREATE TABLE oidc_logins (
    state_hash    TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    client_state  TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);

-- The one-time code a frontend exchanges for tokens after a sign-in
-- (tokens never travel in a URL). Hashed; used once; short-lived.
CREATE TABLE oidc_codes (
    code_hash   TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    provider    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
