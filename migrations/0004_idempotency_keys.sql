-- Idempotency-Keys get their own table, scoped to (API key, route with its path parameters, key): the
-- same key sent to another model's route is another request. Pair calibrations, which run no job, can
-- use it too, and a route whose answer is a body of its own (STOW-RS) keeps that body for replays.

CREATE TABLE idempotency_keys (
    api_key_id     uuid NOT NULL REFERENCES api_keys (id),
    model_id       uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    scope          text NOT NULL,
    key            text NOT NULL,
    request_sha256 text NOT NULL,
    resource_id    uuid NOT NULL,
    response       jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_scope_key PRIMARY KEY (api_key_id, scope, key)
);

-- Keys recorded on jobs until now: estimates and multipart calibrations.
INSERT INTO idempotency_keys (api_key_id, model_id, scope, key, request_sha256, resource_id, created_at)
SELECT j.api_key_id, e.model_id, 'POST /v1/models/' || e.model_id || '/estimates', j.idempotency_key,
       COALESCE(j.request_sha256, ''), j.id, j.created_at
FROM jobs j JOIN estimates e ON e.id = j.id
WHERE j.idempotency_key IS NOT NULL AND j.api_key_id IS NOT NULL
ON CONFLICT DO NOTHING;

INSERT INTO idempotency_keys (api_key_id, model_id, scope, key, request_sha256, resource_id, created_at)
SELECT j.api_key_id, c.model_id, 'POST /v1/models/' || c.model_id || '/calibrations', j.idempotency_key,
       COALESCE(j.request_sha256, ''), j.id, j.created_at
FROM jobs j JOIN calibrations c ON c.id = j.id
WHERE j.idempotency_key IS NOT NULL AND j.api_key_id IS NOT NULL
ON CONFLICT DO NOTHING;

ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key,
    DROP COLUMN api_key_id, DROP COLUMN idempotency_key, DROP COLUMN request_sha256;
