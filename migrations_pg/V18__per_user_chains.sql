-- Per-user hash chains: see the SQLite migration of the same version.
ALTER TABLE credit_transactions ADD COLUMN user_seq BIGINT CHECK (user_seq IS NULL OR user_seq > 0);
-- No unique index on (user_id, user_seq): see the SQLite migration.

ALTER TABLE users ADD COLUMN chain_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN chain_hash TEXT NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
ALTER TABLE users ADD COLUMN sealed_seq BIGINT NOT NULL DEFAULT 0;

CREATE TABLE ledger_seals (
    id          BIGINT PRIMARY KEY,
    created_at  BIGINT NOT NULL,
    legacy_id   BIGINT,
    legacy_hash TEXT,
    heads       BIGINT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE TABLE ledger_seal_heads (
    seal_id BIGINT NOT NULL REFERENCES ledger_seals(id),
    user_id BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    txn_id  BIGINT NOT NULL,
    hash    TEXT NOT NULL,
    PRIMARY KEY (seal_id, user_id)
);
CREATE INDEX ledger_seal_heads_by_txn ON ledger_seal_heads(txn_id);

-- Row ids now come from the identity (the rows before were numbered by
-- the writer): it continues after them.
SELECT setval(pg_get_serial_sequence('credit_transactions', 'id'),
              COALESCE((SELECT MAX(id) FROM credit_transactions), 0) + 1, false);
