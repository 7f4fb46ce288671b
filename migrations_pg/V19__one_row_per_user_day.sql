-- One row per (user, day): see the SQLite migration of the same version.
ALTER TABLE usage_user_running ADD COLUMN spent BIGINT NOT NULL DEFAULT 0 CHECK (spent >= 0);

UPDATE usage_user_running SET spent = (SELECT d.spent FROM daily_spend d
                                       WHERE d.user_id = usage_user_running.user_id AND d.day = usage_user_running.day)
WHERE EXISTS (SELECT 1 FROM daily_spend d WHERE d.user_id = usage_user_running.user_id AND d.day = usage_user_running.day);

-- A day with spend but no usage (a hold still open, or released): its
-- running sums are those of the user's day before it.
INSERT INTO usage_user_running (user_id, day, spent, requests, input_tokens, output_tokens, images, video_seconds, cost, failures, cached_input_tokens, cache_write_tokens, reasoning_tokens, audio_tokens, provider_cost_micro)
SELECT d.user_id, d.day, d.spent,
       coalesce((SELECT r.requests FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.input_tokens FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.output_tokens FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.images FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.video_seconds FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.cost FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.failures FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.cached_input_tokens FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.cache_write_tokens FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.reasoning_tokens FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.audio_tokens FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0),
       coalesce((SELECT r.provider_cost_micro FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day < d.day
                 ORDER BY r.day DESC LIMIT 1), 0)
FROM daily_spend d
WHERE NOT EXISTS (SELECT 1 FROM usage_user_running r WHERE r.user_id = d.user_id AND r.day = d.day);

DROP TABLE daily_spend;
