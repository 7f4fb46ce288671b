-- Payments (issue 33): what a user bought through the payment provider,
-- every provider event received (exactly once, by the provider's id),
-- subscriptions and auto top-up settings. Credits reach the ledger only as
-- grants (`source = 'payment'`, `external_id` = the session or invoice),
-- written in the same transaction as the event that caused them.
CREATE TABLE payments (
    id                 INTEGER PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users(id),
    -- 'package' (a Checkout), 'plan' (a subscription's Checkout),
    -- 'period' (one paid invoice of a subscription), 'auto_topup'
    kind               TEXT NOT NULL CHECK (kind IN ('package', 'plan', 'period', 'auto_topup')),
    item               TEXT NOT NULL,
    -- pending, paid, partially_refunded, refunded, disputed, failed
    status             TEXT NOT NULL,
    amount_minor       INTEGER NOT NULL,
    currency           TEXT NOT NULL,
    credits            INTEGER NOT NULL,
    session_id         TEXT UNIQUE,
    invoice_id         TEXT UNIQUE,
    payment_intent     TEXT UNIQUE,
    customer           TEXT,
    payment_method     TEXT,
    subscription_id    TEXT,
    grant_id           INTEGER REFERENCES credit_grants(id),
    refunded_minor     INTEGER NOT NULL DEFAULT 0,
    -- Credits a refund or dispute took back, and what it could not
    -- (already spent: the balance never goes below zero).
    credits_taken_back INTEGER NOT NULL DEFAULT 0,
    shortfall          INTEGER NOT NULL DEFAULT 0,
    frozen             INTEGER NOT NULL DEFAULT 0,
    failure            TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX payments_by_user ON payments(user_id, id);

CREATE TABLE payment_events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    payment_id  INTEGER REFERENCES payments(id),
    outcome     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE subscriptions (
    id                 TEXT PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users(id),
    plan               TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('active', 'canceled')),
    customer           TEXT,
    current_period_end INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX subscriptions_by_user ON subscriptions(user_id, status);

CREATE TABLE auto_topups (
    user_id        INTEGER PRIMARY KEY REFERENCES users(id),
    package        TEXT NOT NULL,
    threshold      INTEGER NOT NULL,
    enabled        INTEGER NOT NULL DEFAULT 1,
    -- Cleared when one fires, set again when available credits are back
    -- at or above the threshold: once per crossing.
    armed          INTEGER NOT NULL DEFAULT 1,
    -- The UTC day of the last firing and how many that day.
    fired_day      INTEGER NOT NULL DEFAULT 0,
    fired_count    INTEGER NOT NULL DEFAULT 0,
    updated_at     INTEGER NOT NULL
);
