-- Rolling windows (issue 11): a model may keep its latest N batch images; every N new images, the window
-- is estimated like a batch (estimates.kind = 'window'). Window images hold their blobs until they leave
-- the window. Additions only: the previous release ignores them (and its purges leave these blobs be,
-- since the view below names them).
ALTER TABLE models
    ADD COLUMN window_images integer CHECK (window_images BETWEEN 1 AND 100000),
    -- Images added since the last window estimate.
    ADD COLUMN window_pending integer NOT NULL DEFAULT 0;

ALTER TABLE estimates ADD COLUMN kind text NOT NULL DEFAULT 'batch' CHECK (kind IN ('batch', 'window'));

CREATE TABLE window_images (
    model_id       uuid NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    -- Arrival order (within one batch, the batch's order).
    seq            bigserial,
    name           text NOT NULL,
    image_sha256   text NOT NULL,
    source_sha256  text,
    source_format  text,
    source_index   integer,
    pixel_row_mm   double precision,
    pixel_col_mm   double precision,
    added_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, seq)
);

CREATE OR REPLACE VIEW blob_references (sha256) AS
          SELECT onnx_sha256 FROM models
UNION ALL SELECT onnx_sha256 FROM reverse_segmenters
UNION ALL SELECT i.image_sha256 FROM image_set_items i JOIN image_sets s ON s.id = i.set_id
          WHERE s.pixels_purged_at IS NULL
UNION ALL SELECT i.label_sha256 FROM image_set_items i JOIN image_sets s ON s.id = i.set_id
          WHERE i.label_sha256 IS NOT NULL AND s.pixels_purged_at IS NULL
UNION ALL SELECT onnx_sha256 FROM calibration_checkpoints WHERE onnx_sha256 IS NOT NULL
UNION ALL SELECT image_sha256 FROM window_images;
