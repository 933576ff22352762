-- The estimation service's schema. Large files live in the content-addressed blob store; rows hold
-- their sha256 (hex). Every sha256 column is listed in the blob_references view, which orphan cleanup reads.

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    key_id        text NOT NULL UNIQUE,
    secret_sha256 bytea NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'submitter', 'reader')),
    name          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

CREATE TABLE reverse_segmenters (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    onnx_sha256  text NOT NULL,
    onnx_size    bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT reverse_segmenters_name_key UNIQUE (name)
);

-- A set of images (optionally labelled) uploaded once and referenced by models, calibrations, estimates.
CREATE TABLE image_sets (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('reference', 'calibration', 'batch', 'masks')),
    labelled    boolean NOT NULL,
    size        integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE image_set_items (
    set_id        uuid NOT NULL REFERENCES image_sets (id) ON DELETE CASCADE,
    position      integer NOT NULL,
    name          text NOT NULL,
    image_sha256  text NOT NULL,
    label_sha256  text,
    PRIMARY KEY (set_id, position)
);

CREATE TABLE models (
    id                     uuid PRIMARY KEY,
    name                   text NOT NULL,
    spec                   jsonb NOT NULL,
    onnx_sha256            text NOT NULL,
    onnx_size              bigint NOT NULL,
    reverse_segmenter_id   uuid REFERENCES reverse_segmenters (id) ON DELETE RESTRICT,
    reverse_threshold      real NOT NULL DEFAULT 0.4,
    reference_set_id       uuid REFERENCES image_sets (id),
    active_calibration_id  uuid,
    created_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT models_name_key UNIQUE (name)
);

-- Queue rows: one per calibration or estimate, sharing its id. The worker holding a lease is the only one
-- that may finish a job (lease_token must match), so a job yields at most one result.
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('calibration', 'estimate')),
    state            text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    run_after        timestamptz NOT NULL DEFAULT now(),
    lease_token      uuid,
    lease_expires_at timestamptz,
    worker           text,
    progress         real NOT NULL DEFAULT 0,
    stage            text NOT NULL DEFAULT 'queued',
    error            text,
    api_key_id       uuid,
    idempotency_key  text,
    request_sha256   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT jobs_idempotency_key UNIQUE (api_key_id, idempotency_key)
);
CREATE INDEX jobs_claimable ON jobs (created_at) WHERE state IN ('queued', 'running');

CREATE TABLE calibrations (
    id                 uuid PRIMARY KEY,
    model_id           uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    source             text NOT NULL CHECK (source IN ('checkpoints', 'masks', 'pairs')),
    params             jsonb NOT NULL,
    reference_set_id   uuid REFERENCES image_sets (id),
    calibration_set_id uuid REFERENCES image_sets (id),
    activate           boolean NOT NULL DEFAULT true,
    result             jsonb,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX calibrations_model ON calibrations (model_id, created_at);

ALTER TABLE models ADD CONSTRAINT models_active_calibration_fkey
    FOREIGN KEY (active_calibration_id) REFERENCES calibrations (id) ON DELETE SET NULL;

CREATE TABLE calibration_checkpoints (
    calibration_id uuid NOT NULL REFERENCES calibrations (id) ON DELETE CASCADE,
    position       integer NOT NULL,
    name           text NOT NULL,
    onnx_sha256    text,
    masks_set_id   uuid REFERENCES image_sets (id),
    PRIMARY KEY (calibration_id, position)
);

CREATE TABLE estimates (
    id              uuid PRIMARY KEY,
    model_id        uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    calibration_id  uuid NOT NULL REFERENCES calibrations (id) ON DELETE CASCADE,
    batch_set_id    uuid NOT NULL REFERENCES image_sets (id),
    result          jsonb,
    timings         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX estimates_model_time ON estimates (model_id, created_at DESC, id DESC);

CREATE VIEW blob_references (sha256) AS
          SELECT onnx_sha256 FROM models
UNION ALL SELECT onnx_sha256 FROM reverse_segmenters
UNION ALL SELECT image_sha256 FROM image_set_items
UNION ALL SELECT label_sha256 FROM image_set_items WHERE label_sha256 IS NOT NULL
UNION ALL SELECT onnx_sha256 FROM calibration_checkpoints WHERE onnx_sha256 IS NOT NULL;
