-- Events out, and outputs kept.
--
-- `events` is a durable outbox: each row is written in the same transaction
-- as the change it reports. A dispatcher fans new events out into
-- `webhook_deliveries` (one per matching endpoint, after the event: the
-- cursor `events_fanned_out_through` in settings moves in the same
-- transaction), and senders work the deliveries until they are delivered or
-- failed. `files` are job outputs downloaded into the media store beside
-- the database, content-addressed by their SHA-256.

CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    -- The wire id (`evt_` + 24 random hex): unique across restores, so a
    -- receiver that de-duplicates by it never drops a new event.
    uid        TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    user_id    INTEGER,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE webhook_endpoints (
    id          INTEGER PRIMARY KEY,
    url         TEXT NOT NULL,
    -- `whsec_...` for endpoints added through the API (the signer needs it;
    -- it cannot be a hash). NULL for endpoints from the config file, whose
    -- secret stays in the environment variable the config names.
    secret      TEXT,
    -- A JSON array of event types; '[]' = every type.
    events      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- For config endpoints, the key that finds the row again at the next
    -- start (the URL); NULL for API endpoints.
    config_key  TEXT UNIQUE,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    CHECK ((secret IS NULL) = (config_key IS NOT NULL))
);

CREATE TABLE webhook_deliveries (
    id               INTEGER PRIMARY KEY,
    event_id         INTEGER NOT NULL REFERENCES events(id),
    endpoint_id      INTEGER NOT NULL REFERENCES webhook_endpoints(id),
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  INTEGER NOT NULL,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    UNIQUE (event_id, endpoint_id),
    CHECK ((status = 'pending') = (finished_at IS NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_status ON webhook_deliveries(status, id);

INSERT INTO settings (key, value) VALUES ('events_fanned_out_through', '0');

CREATE TABLE files (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id),
    job_id       INTEGER REFERENCES jobs(id),
    -- Lowercase hex; the file is media/<sha256[0..2]>/<sha256>.
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    bytes        INTEGER NOT NULL CHECK (bytes >= 0),
    content_type TEXT NOT NULL,
    -- Where the provider served it (for the record; it expires).
    source_url   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    -- Retention: after this the row is marked deleted and the bytes go
    -- unless another live row holds the same content.
    expires_at   INTEGER,
    deleted_at   INTEGER
);
CREATE INDEX files_by_job ON files(job_id);
CREATE INDEX files_by_sha ON files(sha256) WHERE deleted_at IS NULL;
CREATE INDEX files_expiring ON files(expires_at) WHERE deleted_at IS NULL AND expires_at IS NOT NULL;
