-- no-transaction
-- What the delivery loops claim from (one index per file: CONCURRENTLY cannot share a query string).
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
