-- Webhooks (issue 11): receivers registered by admins, and one delivery row per (receiver, event,
-- estimate), written in the transaction that finishes the estimate and worked off by the delivery loop
-- with leases and backoff like the job queue. Additions only: the previous release ignores them.
CREATE TABLE webhooks (
    id          uuid PRIMARY KEY,
    url         text NOT NULL,
    -- The HMAC key, needed in clear to sign; never returned by the API or logged.
    secret      text NOT NULL,
    events      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event            text NOT NULL CHECK (event IN ('estimate.alert', 'estimate.succeeded', 'estimate.failed')),
    estimate_id      uuid NOT NULL REFERENCES estimates (id) ON DELETE CASCADE,
    -- The exact bytes sent (and signed), the same on every attempt.
    body             text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    -- Led by estimate_id: also the index the cascade from a deleted estimate uses.
    CONSTRAINT webhook_deliveries_once UNIQUE (estimate_id, webhook_id, event)
);
