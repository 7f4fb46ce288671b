-- Foundation: users, API keys, settings, logs, idempotency keys.
-- Times are integer milliseconds since the Unix epoch (UTC).

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    created_at    INTEGER NOT NULL,
    deleted_at    INTEGER
);

CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    key_prefix  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys(user_id, id);

CREATE TABLE logs (
    id         INTEGER PRIMARY KEY,
    log_type   TEXT NOT NULL CHECK (log_type IN ('business', 'system')),
    level      TEXT NOT NULL CHECK (level IN ('info', 'warn', 'error')),
    action     TEXT NOT NULL,
    details    TEXT NOT NULL DEFAULT '{}',
    success    INTEGER NOT NULL CHECK (success IN (0, 1)),
    user_id    INTEGER REFERENCES users(id),
    created_at INTEGER NOT NULL,
    CHECK (log_type = 'business' OR user_id IS NULL)
);
CREATE INDEX logs_by_user ON logs(user_id, id) WHERE user_id IS NOT NULL;
CREATE INDEX logs_by_type ON logs(log_type, level, id);
CREATE INDEX logs_by_time ON logs(created_at);

CREATE TABLE idempotency_keys (
    user_id      INTEGER NOT NULL REFERENCES users(id),
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
    status       INTEGER,
    content_type TEXT,
    body         BLOB,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_time ON idempotency_keys(created_at);
