-- Jobs: a durable state machine for asynchronous generation work, and the
-- history of every transition (written in the same transaction).

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    user_id          INTEGER NOT NULL REFERENCES users(id),
    type             TEXT NOT NULL CHECK (type IN ('text_generation', 'image_generation', 'video_generation')),
    model            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'canceled')),
    input            TEXT NOT NULL,
    output           TEXT,
    error_code       TEXT,
    error_message    TEXT,
    estimated_cost   INTEGER NOT NULL CHECK (estimated_cost >= 0),
    credit_cost      INTEGER CHECK (credit_cost IS NULL OR credit_cost >= 0),
    hold_id          INTEGER REFERENCES credit_holds(id),
    transaction_id   INTEGER REFERENCES credit_transactions(id),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    provider_task_id TEXT,
    lease_until      INTEGER,
    next_attempt_at  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    CHECK ((status IN ('completed', 'failed', 'canceled')) = (finished_at IS NOT NULL)),
    CHECK (status <> 'completed' OR credit_cost IS NOT NULL)
);
CREATE INDEX jobs_due ON jobs(next_attempt_at, id) WHERE status = 'queued';
CREATE INDEX jobs_processing ON jobs(lease_until) WHERE status = 'processing';
CREATE INDEX jobs_by_user ON jobs(user_id, id);
CREATE INDEX jobs_by_status ON jobs(status, id);

CREATE TABLE job_events (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    from_status TEXT,
    to_status   TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    at          INTEGER NOT NULL
);
CREATE INDEX job_events_by_job ON job_events(job_id, id);
