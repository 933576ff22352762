-- Monitoring (issue 11). Alert thresholds per model (NULL: none set), and each model's latest succeeded
-- estimate, kept on write, so that a Prometheus scrape reads one row per model instead of sorting every
-- estimate. Both are additions: the previous release ignores them.
ALTER TABLE models ADD COLUMN thresholds jsonb;

CREATE TABLE latest_estimates (
    model_id uuid PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
    estimate_id uuid NOT NULL REFERENCES estimates(id) ON DELETE CASCADE
);

INSERT INTO latest_estimates (model_id, estimate_id)
SELECT DISTINCT ON (e.model_id) e.model_id, e.id
FROM estimates e JOIN jobs j ON j.id = e.id
WHERE j.state = 'succeeded' AND e.result IS NOT NULL
ORDER BY e.model_id, j.finished_at DESC;
