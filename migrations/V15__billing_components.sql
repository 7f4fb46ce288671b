-- Charges that match the provider's bill (issue 29).
-- A metered ledger row keeps what it was charged for: the components (input,
-- cache reads and writes, reasoning, audio...), each with its tokens, price
-- and cost, and the price group's multiplier, as the JSON the answer showed
-- (`tollgate.breakdown`). The hash chain covers it; older rows have none and
-- hash as before.
ALTER TABLE credit_transactions ADD COLUMN components TEXT;
-- A user's price group (`[pricing] groups`); none = list prices.
ALTER TABLE users ADD COLUMN price_group TEXT;
-- The usage aggregate counts the components and what the provider billed
-- the operator (millionths of a credit, from `[[models]] provider_cost`).
ALTER TABLE usage_daily ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN audio_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN provider_cost_micro INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_totals ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_totals ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_totals ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_totals ADD COLUMN audio_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_totals ADD COLUMN provider_cost_micro INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_user_running ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_user_running ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_user_running ADD COLUMN reasoning_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_user_running ADD COLUMN audio_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_user_running ADD COLUMN provider_cost_micro INTEGER NOT NULL DEFAULT 0;
