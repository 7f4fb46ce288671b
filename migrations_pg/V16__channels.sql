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
    models      TEXT NOT NULL DEFAULT '[]',
    weight      BIGINT NOT NULL DEFAULT 1,
    priority    BIGINT NOT NULL DEFAULT 0,
    enabled     BIGINT NOT NULL DEFAULT 1,
    rpm         BIGINT,
    tpm         BIGINT,
    tags        TEXT NOT NULL DEFAULT '[]',
    settings    TEXT NOT NULL DEFAULT '{}',
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE channel_keys (
    id              TEXT PRIMARY KEY,
    channel_id      TEXT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    secret          TEXT,
    env             TEXT,
    fingerprint     TEXT NOT NULL,
    last4           TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'enabled',
    disabled_reason TEXT,
    disabled_at     BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX channel_keys_by_channel ON channel_keys (channel_id);

CREATE TABLE catalog_models (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    enabled     BIGINT NOT NULL DEFAULT 1,
    revision    BIGINT NOT NULL DEFAULT 1,
    source      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

INSERT INTO settings (key, value) VALUES ('catalog_version', '0');

ALTER TABLE usage_totals ADD COLUMN channel TEXT NOT NULL DEFAULT '';
ALTER TABLE usage_totals DROP CONSTRAINT usage_totals_pkey;
ALTER TABLE usage_totals ADD PRIMARY KEY (day, model, channel);
