-- no-transaction
-- GET /v1/webhooks/{id}/deliveries, newest first.
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at DESC, id DESC);
