-- The credit ledger: append-only transactions with a hash chain, two-phase
-- holds, per-user daily spend. users.credits and users.held are caches,
-- updated in the same transaction as the rows they summarise.

ALTER TABLE users ADD COLUMN credits INTEGER NOT NULL DEFAULT 0 CHECK (credits >= 0);
ALTER TABLE users ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0);

CREATE TABLE credit_transactions (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    amount        INTEGER NOT NULL CHECK (amount <> 0),
    kind          TEXT NOT NULL CHECK (kind IN ('grant', 'consume', 'refund', 'adjust')),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    job_id        INTEGER,
    hold_id       INTEGER,
    description   TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    CHECK (kind NOT IN ('grant', 'refund') OR amount > 0),
    CHECK (kind <> 'consume' OR amount < 0)
);
-- Covers listing a user's rows newest first and SUM(amount) per user.
CREATE INDEX credit_transactions_by_user ON credit_transactions(user_id, id, amount);

CREATE TRIGGER credit_transactions_no_update BEFORE UPDATE ON credit_transactions
BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;
CREATE TRIGGER credit_transactions_no_delete BEFORE DELETE ON credit_transactions
BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;

CREATE TABLE credit_holds (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id),
    amount         INTEGER NOT NULL CHECK (amount > 0),
    status         TEXT NOT NULL CHECK (status IN ('active', 'settled', 'released', 'expired')),
    job_id         INTEGER,
    day            INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    closed_at      INTEGER,
    charged        INTEGER CHECK (charged IS NULL OR (charged >= 0 AND charged <= amount)),
    transaction_id INTEGER REFERENCES credit_transactions(id),
    CHECK ((status = 'active') = (closed_at IS NULL)),
    CHECK (status <> 'settled' OR charged IS NOT NULL)
);
CREATE INDEX credit_holds_active_by_user ON credit_holds(user_id) WHERE status = 'active';
CREATE INDEX credit_holds_active_by_expiry ON credit_holds(expires_at) WHERE status = 'active';

CREATE TABLE daily_spend (
    user_id INTEGER NOT NULL,
    day     INTEGER NOT NULL,
    spent   INTEGER NOT NULL CHECK (spent >= 0),
    PRIMARY KEY (user_id, day)
) WITHOUT ROWID;
