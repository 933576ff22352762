-- Transient failures (database, blob store, runtime) are retried with backoff until retry_until, set at
-- the first one; they do not use up the attempts, which count runs lost to crashed workers.
ALTER TABLE jobs ADD COLUMN retry_until timestamptz,
    ADD COLUMN transient_failures integer NOT NULL DEFAULT 0;
