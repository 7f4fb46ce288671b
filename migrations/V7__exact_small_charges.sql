-- Exact small charges. Token prices are per 1M tokens, so a call's exact cost
-- is an integer number of millionths of a credit ("micro"). Each user keeps
-- the unbilled fraction (carry, 0..999999 micro); a metered consume row
-- records the call's exact cost and the carry after it, so the sum a user
-- pays over many calls is the exact total rounded once, the audit can
-- recompute every carry, and the hash chain covers both. A call cheaper than
-- what the carry can absorb is a consume row of amount 0, which the old
-- CHECK (amount <> 0) forbade: the table is rebuilt (SQLite cannot alter a
-- CHECK), rows and ids unchanged.

ALTER TABLE users ADD COLUMN carry_micro INTEGER NOT NULL DEFAULT 0
    CHECK (carry_micro >= 0 AND carry_micro < 1000000);

-- Rows of credit_holds and jobs reference credit_transactions(id) by name.
-- tollgate runs migrations with foreign keys off and checks them after
-- (storage::migrate), so the table can be rebuilt the way SQLite documents:
-- new table, copy, drop the old, rename; the references then resolve to the
-- new table, whose rows keep their ids.
DROP TRIGGER credit_transactions_no_update;
DROP TRIGGER credit_transactions_no_delete;

CREATE TABLE credit_transactions_v7 (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    amount        INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('grant', 'consume', 'refund', 'adjust')),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    job_id        INTEGER,
    hold_id       INTEGER,
    description   TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    cost_micro    INTEGER CHECK (cost_micro IS NULL OR cost_micro > 0),
    carry_after   INTEGER CHECK (carry_after IS NULL OR (carry_after >= 0 AND carry_after < 1000000)),
    CHECK ((cost_micro IS NULL) = (carry_after IS NULL)),
    CHECK (cost_micro IS NULL OR kind = 'consume'),
    CHECK (amount <> 0 OR cost_micro IS NOT NULL),
    CHECK (kind NOT IN ('grant', 'refund') OR amount > 0),
    CHECK (kind <> 'consume' OR amount < 0 OR (amount = 0 AND cost_micro IS NOT NULL))
);

INSERT INTO credit_transactions_v7
    (id, user_id, amount, kind, balance_after, job_id, hold_id, description, created_at, hash)
SELECT id, user_id, amount, kind, balance_after, job_id, hold_id, description, created_at, hash
FROM credit_transactions ORDER BY id;

DROP TABLE credit_transactions;
ALTER TABLE credit_transactions_v7 RENAME TO credit_transactions;

CREATE INDEX credit_transactions_by_user ON credit_transactions(user_id, id, amount);

CREATE TRIGGER credit_transactions_no_update BEFORE UPDATE ON credit_transactions
BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;
CREATE TRIGGER credit_transactions_no_delete BEFORE DELETE ON credit_transactions
BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;
