-- Everyone's totals in shards: see the SQLite migration of the same version.
ALTER TABLE usage_totals ADD COLUMN shard BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_totals DROP CONSTRAINT usage_totals_pkey;
ALTER TABLE usage_totals ADD PRIMARY KEY (day, model, channel, shard);
ALTER TABLE daily_spend_global ADD COLUMN shard BIGINT NOT NULL DEFAULT 0;
ALTER TABLE daily_spend_global DROP CONSTRAINT daily_spend_global_pkey;
ALTER TABLE daily_spend_global ADD PRIMARY KEY (day, shard);
