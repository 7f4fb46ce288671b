-- Credit grants. Every credit addition is a grant with its own category,
-- priority and expiry; every charge draws on grants in a fixed order, and
-- which grants paid for which ledger row is recorded (grant_draws). Holds
-- reserve credits on specific grants (hold_reservations), so credits held
-- for a call in flight are honoured even if their grant expires meanwhile.
-- The ledger gains two kinds: `expire` (a grant's unused remainder leaving at
-- its expiry) and `void` (an admin ending a grant early). SQLite cannot alter
-- a CHECK, so credit_transactions is rebuilt as in V7: rows and ids unchanged.

DROP TRIGGER credit_transactions_no_update;
DROP TRIGGER credit_transactions_no_delete;

CREATE TABLE credit_transactions_v8 (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    amount        INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('grant', 'consume', 'refund', 'adjust', 'expire', 'void')),
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0),
    job_id        INTEGER,
    hold_id       INTEGER,
    description   TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    cost_micro    INTEGER CHECK (cost_micro IS NULL OR cost_micro > 0),
    carry_after   INTEGER CHECK (carry_after IS NULL OR (carry_after >= 0 AND carry_after < 1000000)),
    -- The one grant a row drew on, when it drew on exactly one (the common
    -- case: no grant_draws row is written for it). Attribution, like
    -- grant_draws, not part of the hash chain. No REFERENCES: a foreign key
    -- would cost every charge a lookup of the grant; the audit checks that
    -- each named grant exists and belongs to the row's user.
    grant_id      INTEGER,
    CHECK ((cost_micro IS NULL) = (carry_after IS NULL)),
    CHECK (cost_micro IS NULL OR kind = 'consume'),
    CHECK (amount <> 0 OR cost_micro IS NOT NULL),
    CHECK (kind NOT IN ('grant', 'refund') OR amount > 0),
    CHECK (kind NOT IN ('expire', 'void') OR amount < 0),
    CHECK (kind <> 'consume' OR amount < 0 OR (amount = 0 AND cost_micro IS NOT NULL))
);

INSERT INTO credit_transactions_v8
    (id, user_id, amount, kind, balance_after, job_id, hold_id, description, created_at, hash, cost_micro, carry_after)
SELECT id, user_id, amount, kind, balance_after, job_id, hold_id, description, created_at, hash, cost_micro, carry_after
FROM credit_transactions ORDER BY id;

DROP TABLE credit_transactions;
ALTER TABLE credit_transactions_v8 RENAME TO credit_transactions;

CREATE INDEX credit_transactions_by_user ON credit_transactions(user_id, id, amount);

CREATE TRIGGER credit_transactions_no_update BEFORE UPDATE ON credit_transactions
BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;
CREATE TRIGGER credit_transactions_no_delete BEFORE DELETE ON credit_transactions
BEGIN SELECT RAISE(ABORT, 'credit_transactions is append-only'); END;

CREATE TABLE redemption_codes (
    id                 INTEGER PRIMARY KEY,
    code_hash          TEXT NOT NULL UNIQUE,
    code_hint          TEXT NOT NULL,
    amount             INTEGER NOT NULL CHECK (amount > 0),
    category           TEXT NOT NULL CHECK (category IN ('paid', 'promotional')),
    priority           INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 100),
    grant_expires_days INTEGER CHECK (grant_expires_days IS NULL OR grant_expires_days > 0),
    redeem_by          INTEGER,
    max_redemptions    INTEGER NOT NULL CHECK (max_redemptions > 0),
    redemptions        INTEGER NOT NULL DEFAULT 0 CHECK (redemptions >= 0 AND redemptions <= max_redemptions),
    description        TEXT NOT NULL DEFAULT '',
    batch_id           TEXT NOT NULL,
    created_by         INTEGER REFERENCES users(id),
    created_at         INTEGER NOT NULL,
    disabled_at        INTEGER
);

CREATE TABLE credit_grants (
    id             INTEGER PRIMARY KEY,
    user_id        INTEGER NOT NULL REFERENCES users(id),
    amount         INTEGER NOT NULL CHECK (amount > 0),
    -- Credits not yet drawn, expired or voided; `reserved` of them are held
    -- by active holds (hold_reservations).
    remaining      INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    reserved       INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= remaining),
    -- When remaining reached 0. The partial indexes below are on this, not
    -- on remaining: SQLite rewrites a partial index entry whenever a column
    -- its WHERE names is assigned, so an index on `remaining > 0` would be
    -- rewritten by every charge; this column is assigned once per grant.
    emptied_at     INTEGER,
    category       TEXT NOT NULL CHECK (category IN ('paid', 'promotional')),
    priority       INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 100),
    effective_at   INTEGER NOT NULL,
    expires_at     INTEGER,
    voided_at      INTEGER,
    source         TEXT NOT NULL CHECK (source IN ('admin', 'signup', 'code', 'payment', 'legacy')),
    description    TEXT NOT NULL DEFAULT '',
    external_id    TEXT,
    code_id        INTEGER REFERENCES redemption_codes(id),
    -- The `grant` ledger row that added the credits; a legacy grant (the
    -- balance a user held when grants arrived) has none.
    transaction_id INTEGER REFERENCES credit_transactions(id),
    created_at     INTEGER NOT NULL,
    CHECK ((source = 'legacy') = (transaction_id IS NULL)),
    CHECK ((source = 'code') = (code_id IS NOT NULL)),
    CHECK ((remaining = 0) = (emptied_at IS NOT NULL))
);
CREATE INDEX credit_grants_by_user ON credit_grants(user_id, id);
CREATE UNIQUE INDEX credit_grants_by_external_id ON credit_grants(user_id, external_id) WHERE external_id IS NOT NULL;
-- One redemption per user per code, enforced by the database.
CREATE UNIQUE INDEX credit_grants_one_per_code ON credit_grants(code_id, user_id) WHERE code_id IS NOT NULL;
-- The draw order: priority, then expiry (never-expiring last), then
-- promotional before paid, then oldest first.
CREATE INDEX credit_grants_draw_order ON credit_grants
    (user_id, priority, expires_at IS NULL, expires_at, category = 'paid', id) WHERE emptied_at IS NULL;
-- The sweeper's scan for grants whose expiry has come.
CREATE INDEX credit_grants_expiring ON credit_grants(expires_at) WHERE emptied_at IS NULL AND expires_at IS NOT NULL;

-- Which grants paid for which ledger row, when a row drew on more than one
-- grant (one drawn on alone is named by credit_transactions.grant_id): one
-- row per (ledger row, grant) with the whole credits taken from that grant.
-- The draws of a consume, adjust, expire or void sum to minus its amount.
CREATE TABLE grant_draws (
    transaction_id INTEGER NOT NULL REFERENCES credit_transactions(id),
    grant_id       INTEGER NOT NULL REFERENCES credit_grants(id),
    amount         INTEGER NOT NULL CHECK (amount > 0),
    PRIMARY KEY (transaction_id, grant_id)
) WITHOUT ROWID;

-- What an active hold reserved on which grant; deleted when the hold closes.
CREATE TABLE hold_reservations (
    hold_id  INTEGER NOT NULL REFERENCES credit_holds(id),
    grant_id INTEGER NOT NULL REFERENCES credit_grants(id),
    amount   INTEGER NOT NULL CHECK (amount > 0),
    PRIMARY KEY (hold_id, grant_id)
) WITHOUT ROWID;

-- The earliest expiry among the user's grants that still have unreserved
-- credits (NULL = none): a charge runs the user's expiry first only when
-- this time has come, so the common charge pays nothing for expiry.
ALTER TABLE users ADD COLUMN next_expiry_at INTEGER;

-- Each user's balance becomes one legacy grant, never expiring, holding
-- what the user's active holds reserve.
INSERT INTO credit_grants
    (user_id, amount, remaining, reserved, category, priority, effective_at, source, description, created_at)
SELECT id, credits, credits, held, 'paid', 50, CAST(strftime('%s', 'now') AS INTEGER) * 1000, 'legacy',
       'balance before credit grants', CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM users WHERE credits > 0 ORDER BY id;

INSERT INTO hold_reservations (hold_id, grant_id, amount)
SELECT h.id, g.id, h.amount FROM credit_holds h JOIN credit_grants g ON g.user_id = h.user_id
WHERE h.status = 'active';

-- Ledger rows from here on draw on grants; the audit checks draws from this
-- row id.
INSERT INTO settings (key, value)
SELECT 'grants_from_transaction_id', CAST(COALESCE(MAX(id), 0) + 1 AS TEXT) FROM credit_transactions;
