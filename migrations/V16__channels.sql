-- Channels, their keys and the model catalog, managed live (issue 31).
-- Seeded from the config file at start (`source = 'config'`) or added by an
-- administrator (`source = 'api'`). A key's secret is stored sealed
-- (`sealed:v1:...`, TOLLGATE_SECRET_KEY); a key from the config file is
-- read from its environment variable at start and never stored (`env`).
CREATE TABLE channels (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    base_url    TEXT,
    -- JSON: [{model, upstream, priority?}]
    models      TEXT NOT NULL DEFAULT '[]',
    weight      INTEGER NOT NULL DEFAULT 1,
    priority    INTEGER NOT NULL DEFAULT 0,
    enabled     INTEGER NOT NULL DEFAULT 1,
    rpm         INTEGER,
    tpm         INTEGER,
    -- JSON: ["tag", ...]
    tags        TEXT NOT NULL DEFAULT '[]',
    -- JSON: timeouts and breaker thresholds
    settings    TEXT NOT NULL DEFAULT '{}',
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE channel_keys (
    id              TEXT PRIMARY KEY,
    channel_id      TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    secret          TEXT,
    env             TEXT,
    fingerprint     TEXT NOT NULL,
    last4           TEXT NOT NULL,
    -- 'enabled', 'disabled' (by an administrator) or 'failed' (by health:
    -- the probe may enable it again)
    status          TEXT NOT NULL DEFAULT 'enabled',
    disabled_reason TEXT,
    disabled_at     INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX channel_keys_by_channel ON channel_keys (channel_id);

CREATE TABLE catalog_models (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    -- JSON: price, provider_cost and the output/input bounds
    spec        TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    revision    INTEGER NOT NULL DEFAULT 1,
    source      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Bumped by every change to the three tables above: other instances poll
-- it and reload.
INSERT INTO settings (key, value) VALUES ('catalog_version', '0');

-- Usage by channel: the all-user aggregate gains the channel that carried
-- the call ('' before channels, and for calls that reached none).
CREATE TABLE usage_totals_new (
    day                  INTEGER NOT NULL,
    model                TEXT NOT NULL,
    requests             INTEGER NOT NULL DEFAULT 0,
    input_tokens         INTEGER NOT NULL DEFAULT 0,
    output_tokens        INTEGER NOT NULL DEFAULT 0,
    images               INTEGER NOT NULL DEFAULT 0,
    video_seconds        INTEGER NOT NULL DEFAULT 0,
    cost                 INTEGER NOT NULL DEFAULT 0,
    failures             INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens   INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens     INTEGER NOT NULL DEFAULT 0,
    audio_tokens         INTEGER NOT NULL DEFAULT 0,
    provider_cost_micro  INTEGER NOT NULL DEFAULT 0,
    channel              TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (day, model, channel)
) WITHOUT ROWID;
INSERT INTO usage_totals_new (day, model, requests, input_tokens, output_tokens, images, video_seconds, cost, failures,
                              cached_input_tokens, cache_write_tokens, reasoning_tokens, audio_tokens, provider_cost_micro)
SELECT day, model, requests, input_tokens, output_tokens, images, video_seconds, cost, failures,
       cached_input_tokens, cache_write_tokens, reasoning_tokens, audio_tokens, provider_cost_micro FROM usage_totals;
DROP TABLE usage_totals;
ALTER TABLE usage_totals_new RENAME TO usage_totals;
