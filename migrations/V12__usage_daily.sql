-- Usage analytics (issue 17): one row per (day, user, model, API key),
-- kept in the same transaction as every charge. `model` is '' for plain
-- consumes; `api_key_id` 0 for calls made with an access token.
CREATE TABLE usage_daily (
    day           INTEGER NOT NULL,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    model         TEXT NOT NULL,
    api_key_id    INTEGER NOT NULL,
    requests      INTEGER NOT NULL DEFAULT 0,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    images        INTEGER NOT NULL DEFAULT 0,
    video_seconds INTEGER NOT NULL DEFAULT 0,
    cost          INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id, model, api_key_id)
) WITHOUT ROWID;
CREATE INDEX usage_daily_by_user ON usage_daily (user_id, day);

-- What the ledger already holds: every consume row as one request of an
-- unknown model on its UTC day, so the audit's equality holds from here on.
INSERT INTO usage_daily (day, user_id, model, api_key_id, requests, cost)
SELECT created_at / 86400000, user_id, '', COALESCE(api_key_id, 0), count(*), -sum(amount)
FROM credit_transactions WHERE kind = 'consume'
GROUP BY created_at / 86400000, user_id, COALESCE(api_key_id, 0);

-- The same, summed over users and keys: what all-user reports by day and
-- model read (a few rows a day, whatever the number of users).
CREATE TABLE usage_totals (
    day           INTEGER NOT NULL,
    model         TEXT NOT NULL,
    requests      INTEGER NOT NULL DEFAULT 0,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    images        INTEGER NOT NULL DEFAULT 0,
    video_seconds INTEGER NOT NULL DEFAULT 0,
    cost          INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, model)
) WITHOUT ROWID;
INSERT INTO usage_totals (day, model, requests, cost)
SELECT day, model, sum(requests), sum(cost) FROM usage_daily GROUP BY day, model;

-- Per user, the running sums through each day with activity: a user's total
-- over any range is two lookups (through `end`, minus through the day
-- before `start`), so a report of every user by user reads two rows per
-- user instead of every user's every day.
CREATE TABLE usage_user_running (
    user_id       INTEGER NOT NULL REFERENCES users(id),
    day           INTEGER NOT NULL,
    requests      INTEGER NOT NULL DEFAULT 0,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    images        INTEGER NOT NULL DEFAULT 0,
    video_seconds INTEGER NOT NULL DEFAULT 0,
    cost          INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
) WITHOUT ROWID;
INSERT INTO usage_user_running (user_id, day, requests, cost)
SELECT user_id, day,
       sum(sum(requests)) OVER (PARTITION BY user_id ORDER BY day),
       sum(sum(cost)) OVER (PARTITION BY user_id ORDER BY day)
FROM usage_daily GROUP BY user_id, day;
