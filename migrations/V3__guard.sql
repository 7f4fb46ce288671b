-- Cost guardrails: per-user limit overrides (NULL = the configured default)
-- and the all-users daily spend behind the global budget kill switch.

CREATE TABLE user_limits (
    user_id              INTEGER PRIMARY KEY REFERENCES users(id),
    rpm                  INTEGER CHECK (rpm IS NULL OR rpm > 0),
    burst                INTEGER CHECK (burst IS NULL OR burst > 0),
    max_cost_per_request INTEGER CHECK (max_cost_per_request IS NULL OR max_cost_per_request >= 0),
    daily_cap            INTEGER CHECK (daily_cap IS NULL OR daily_cap >= 0),
    updated_at           INTEGER NOT NULL
);

CREATE TABLE daily_spend_global (
    day   INTEGER PRIMARY KEY,
    spent INTEGER NOT NULL CHECK (spent >= 0)
);
