-- Everyone's totals in shards (issue 34): `usage_totals` per (day, model,
-- channel) and `daily_spend_global` per day were rows that every charge
-- updated, so on PostgreSQL every charge waited for the one before it to
-- commit. Each is now split in 32 rows by user (`shard` = user id mod 32);
-- readers sum the shards. The rows so far become shard 0.
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
    shard                INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, model, channel, shard)
) WITHOUT ROWID;
INSERT INTO usage_totals_new (day, model, channel, requests, input_tokens, output_tokens, images, video_seconds, cost, failures, cached_input_tokens, cache_write_tokens, reasoning_tokens, audio_tokens, provider_cost_micro)
SELECT day, model, channel, requests, input_tokens, output_tokens, images, video_seconds, cost, failures, cached_input_tokens, cache_write_tokens, reasoning_tokens, audio_tokens, provider_cost_micro FROM usage_totals;
DROP TABLE usage_totals;
ALTER TABLE usage_totals_new RENAME TO usage_totals;

CREATE TABLE daily_spend_global_new (
    day   INTEGER NOT NULL,
    spent INTEGER NOT NULL CHECK (spent >= 0),
    shard INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, shard)
) WITHOUT ROWID;
INSERT INTO daily_spend_global_new (day, spent) SELECT day, spent FROM daily_spend_global;
DROP TABLE daily_spend_global;
ALTER TABLE daily_spend_global_new RENAME TO daily_spend_global;
