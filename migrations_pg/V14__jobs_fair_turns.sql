-- Fair claiming (issue 35): one user's backlog must not starve the others.
-- A queued job's `turn` is its place in a round-robin over users: a user's
-- next job goes one turn after their last queued one, and never before the
-- oldest turn still queued, so a newcomer waits behind at most one job of
-- each backlog. Workers claim by (turn, id). Jobs queued before this
-- migration share turn 0 and keep their order by id.
ALTER TABLE jobs ADD COLUMN turn BIGINT NOT NULL DEFAULT 0;
-- The claim's order, over queued jobs only.
CREATE INDEX jobs_fair ON jobs(turn, id) WHERE status = 'queued';
-- A user's queued jobs: their count (jobs.queued_per_user_max) and their
-- last turn, each a short range of this index.
CREATE INDEX jobs_queued_by_user ON jobs(user_id, turn) WHERE status = 'queued';
