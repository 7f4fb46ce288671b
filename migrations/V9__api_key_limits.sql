-- API keys with their own limits: an expiry, a model allow-list, a lifetime
-- and a daily spend limit, and a rate. A key's spend (charges made through
-- it, plus what its calls in flight hold) is kept in the same transaction as
-- each charge, as users' daily spend is; ledger rows and holds record the key
-- they were made through, so the audit can recompute every key's spend.

ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
-- A JSON array of model names; NULL = every model.
ALTER TABLE api_keys ADD COLUMN models TEXT;
ALTER TABLE api_keys ADD COLUMN spend_limit INTEGER CHECK (spend_limit IS NULL OR spend_limit >= 0);
ALTER TABLE api_keys ADD COLUMN daily_spend_limit INTEGER CHECK (daily_spend_limit IS NULL OR daily_spend_limit >= 0);
ALTER TABLE api_keys ADD COLUMN rpm INTEGER CHECK (rpm IS NULL OR rpm > 0);
ALTER TABLE api_keys ADD COLUMN spent_total INTEGER NOT NULL DEFAULT 0 CHECK (spent_total >= 0);

CREATE TABLE api_key_daily_spend (
    api_key_id INTEGER NOT NULL,
    day        INTEGER NOT NULL,
    spent      INTEGER NOT NULL CHECK (spent >= 0),
    PRIMARY KEY (api_key_id, day)
) WITHOUT ROWID;

-- Not part of the hash chain: attribution, not money (the amount, the user
-- and the balance are chained as before).
ALTER TABLE credit_transactions ADD COLUMN api_key_id INTEGER REFERENCES api_keys(id);
ALTER TABLE credit_holds ADD COLUMN api_key_id INTEGER REFERENCES api_keys(id);
